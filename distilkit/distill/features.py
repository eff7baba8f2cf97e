"""Feature distillation: MSE between chosen (student_layer, teacher_layer) block outputs.

Pairs are plain `list[tuple[int, int]]`, so `distilkit.depth.LayerMap.remap(pairs)` output can be
passed as is. When widths differ, a `FeatureProjector` maps student features (last dim) to the
teacher width with one learned Linear per pair; it is a training-only module to optimise with the
student (register it with `Distiller(..., modules={"projector": proj})`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Union

import torch
import torch.nn.functional as F
from torch import nn

from distilkit.checks import as_int
from distilkit.errors import DistilkitError

if TYPE_CHECKING:
    from distilkit.depth.layermap import LayerMap

Pair = tuple[int, int]
Dims = Union[int, Mapping[int, int], Sequence[int]]
Features = Union[Sequence[torch.Tensor], Mapping[int, torch.Tensor]]


def _pair_key(pair: Pair) -> str:
    return f"{pair[0]}->{pair[1]}"


def _normalise_pairs(pairs: Sequence[Pair], fn: str) -> list[Pair]:
    """Validate pairs as (int, int) (numpy integers included) and return them as a list of tuples of ints."""
    out = []
    for pair in pairs:
        try:
            student, teacher = pair
            out.append((as_int(student, "student layer"), as_int(teacher, "teacher layer")))
        except (TypeError, ValueError):  # not a pair, or not ints (DistilkitError is a ValueError)
            raise DistilkitError(
                f"{fn}: layer pairs must be (student_layer, teacher_layer) ints, got {pair!r}"
            ) from None
    if not out:
        raise DistilkitError(f"{fn}: no (student_layer, teacher_layer) pairs given")
    return out


def _width(dims: Dims, layer: int, side: str) -> int:
    """Width of `layer` from an int (all layers), a per-layer mapping, or a per-layer sequence / 1-d array."""
    if not isinstance(dims, (Mapping, Sequence)) and getattr(dims, "ndim", 0) != 1:
        return as_int(dims, f"FeatureProjector: {side} width", minimum=1)
    try:
        width = dims[layer]
    except (KeyError, IndexError) as err:
        raise DistilkitError(f"FeatureProjector: no {side} width given for layer {layer}") from err
    return as_int(width, f"FeatureProjector: {side} width of layer {layer}", minimum=1)


class FeatureProjector(nn.Module):
    """One learned Linear(student width -> teacher width) per (student_layer, teacher_layer) pair.

    `student_dims` / `teacher_dims`: one int for every layer, or per-layer widths (mapping or
    sequence indexed by layer). Pairs whose widths already match get an identity map unless
    `project_equal=True`.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        student_dims: Dims,
        teacher_dims: Dims,
        bias: bool = True,
        project_equal: bool = False,
    ) -> None:
        super().__init__()
        self.pairs = _normalise_pairs(pairs, "FeatureProjector")
        self.proj = nn.ModuleDict()
        for pair in self.pairs:
            d_in, d_out = _width(student_dims, pair[0], "student"), _width(teacher_dims, pair[1], "teacher")
            if d_in != d_out or project_equal:
                self.proj[_pair_key(pair)] = nn.Linear(d_in, d_out, bias=bias)

    def forward(self, pair: Pair, features: torch.Tensor) -> torch.Tensor:
        """Project one student feature map (..., C_student) for `pair`; identity when not projected."""
        key = _pair_key(pair)
        if key not in self.proj:
            if tuple(pair) not in self.pairs:
                raise DistilkitError(f"FeatureProjector: pair {tuple(pair)} unknown (has {self.pairs})")
            return features
        return self.proj[key](features)

    def renumber(self, new_pairs: Sequence[Pair]) -> None:
        """Rename pairs position by position (e.g. to `LayerMap.remap(pairs)`), keeping the weights."""
        new_pairs = _normalise_pairs(new_pairs, "FeatureProjector.renumber")
        if len(new_pairs) != len(self.pairs):
            raise DistilkitError(
                f"FeatureProjector.renumber: {len(new_pairs)} new pairs for {len(self.pairs)} existing ones"
            )
        renamed = nn.ModuleDict()
        for old, new in zip(self.pairs, new_pairs):
            if _pair_key(old) in self.proj:
                renamed[_pair_key(new)] = self.proj[_pair_key(old)]
        self.proj, self.pairs = renamed, new_pairs

    def apply_layer_map(self, layer_map: "LayerMap", drop_removed: bool = False) -> list[Pair]:
        """Follow a depth pruning of the student: renumber the pairs' student layers with `layer_map`
        (`distilkit.depth.LayerMap`), keeping each projector. A pair on a removed layer raises, or with
        `drop_removed` goes away with its projector. Returns the new pairs (for `feature_kd`)."""
        kept = [pair for pair in self.pairs if not (drop_removed and pair[0] in layer_map.removed)]
        if not kept:
            raise DistilkitError(f"FeatureProjector.apply_layer_map: every pair is on a removed layer {list(layer_map.removed)}")
        new_pairs = [(layer_map[student], teacher) for student, teacher in kept]
        self.pairs = kept
        self.renumber(new_pairs)
        return list(self.pairs)


def _layer(feats: Features, layer: int, side: str, pair: Pair) -> torch.Tensor:
    try:
        return feats[layer]
    except (KeyError, IndexError) as err:
        count = len(feats)
        raise DistilkitError(
            f"feature_kd: pair {pair}: {side} layer {layer} not among the {count} {side} features"
        ) from err


def feature_kd(
    student_feats: Features,
    teacher_feats: Features,
    pairs: Sequence[Pair],
    projector: FeatureProjector | None = None,
) -> torch.Tensor:
    """Mean over pairs of MSE(project(student_feats[s]), teacher_feats[t]); teacher features are detached."""
    losses = []
    for pair in _normalise_pairs(pairs, "feature_kd"):
        student = _layer(student_feats, pair[0], "student", pair)
        teacher = _layer(teacher_feats, pair[1], "teacher", pair).detach()
        if projector is not None:
            student = projector(pair, student)
        if student.shape != teacher.shape:
            hint = "" if projector is not None else "; pass a FeatureProjector when widths differ"
            raise DistilkitError(
                f"feature_kd: pair {pair}: student feature {tuple(student.shape)} vs teacher "
                f"{tuple(teacher.shape)}{hint}"
            )
        losses.append(F.mse_loss(student, teacher.to(student.dtype)))
    return torch.stack(losses).mean()
