"""Depth pruning for any residual-block model: choose layers, fade them out (PMDP), drop them."""

from __future__ import annotations

from distilkit.blocks import resolve_blocks, unwrap
from distilkit.depth.influence import block_influence
from distilkit.depth.init import init_student_from_layers, shallow_copy
from distilkit.depth.layermap import LayerMap, remove_layers
from distilkit.depth.pruner import ProgressiveDepthPruner
from distilkit.depth.select import select_layers, select_layers_by_influence
from distilkit.schedule import (
    CosineSchedule,
    LinearSchedule,
    StepSchedule,
    schedule_from_dict,
    schedule_to_dict,
)

__all__ = [
    "CosineSchedule",
    "LayerMap",
    "LinearSchedule",
    "ProgressiveDepthPruner",
    "StepSchedule",
    "block_influence",
    "init_student_from_layers",
    "remove_layers",
    "resolve_blocks",
    "schedule_from_dict",
    "schedule_to_dict",
    "select_layers",
    "select_layers_by_influence",
    "shallow_copy",
    "unwrap",
]
