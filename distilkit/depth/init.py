"""Shallow students cut from a deep model: the "first-k" / "skip-k" initialisation baselines."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import nn

from distilkit.blocks import check_layers, resolve_blocks, unwrap
from distilkit.depth.layermap import remove_layers
from distilkit.depth.select import select_layers
from distilkit.errors import DistilkitError


def init_student_from_layers(deep_model: nn.Module, layers: Sequence[int], blocks: str = "blocks") -> nn.Module:
    """A deep copy of `deep_model` keeping only blocks `layers` (0-based, in model order);
    `deep_model` is untouched. E.g. layers=[2, 5, 8, 11] is the paper's "Tea-skip4"."""
    depth = len(resolve_blocks(deep_model, blocks))
    kept = check_layers(depth, layers, what="layers to keep")
    if not kept:
        raise DistilkitError("init_student_from_layers: no layers to keep")
    student = copy.deepcopy(unwrap(deep_model))
    remove_layers(student, [i for i in range(depth) if i not in set(kept)], blocks)
    return student


def shallow_copy(
    model: nn.Module, keep: int, method: str = "first", blocks: str = "blocks"
) -> nn.Module:
    """A deep copy of `model` with `keep` blocks chosen by `select_layers` ("first": Tea-fir-k,
    "skip": Tea-skip-k, "last")."""
    depth = len(resolve_blocks(model, blocks))
    removed = set(select_layers(depth, keep, method))
    return init_student_from_layers(model, [i for i in range(depth) if i not in removed], blocks)
