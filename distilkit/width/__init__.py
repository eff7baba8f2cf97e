"""MLP width pruning for residual-block models (timm-style `blocks[i].mlp.fc1/fc2`).

`reduce_mlp_ratio` slices hidden channels at once; `ProgressiveWidthPruner` fades them out on a
schedule first (the width analogue of PMDP). Both use torch-pruning's dependency graph and never
touch attention.
"""

from __future__ import annotations

from distilkit.width.importance import IMPORTANCES, channel_importance
from distilkit.width.progressive import ProgressiveWidthPruner
from distilkit.width.reduce import BlockWidth, WidthReport, reduce_mlp_ratio
from distilkit.width.sites import MlpSite, find_mlp_sites

__all__ = [
    "IMPORTANCES",
    "BlockWidth",
    "MlpSite",
    "ProgressiveWidthPruner",
    "WidthReport",
    "channel_importance",
    "find_mlp_sites",
    "reduce_mlp_ratio",
]
