"""The loss parts a recipe stage can weight, in one registry (`LOSS_PARTS`): KL on side distributions,
L1/GIoU/CIoU, feature MSE, prediction-token attention distillation, score BCE; `StageLoss` picks a stage's.

Training runs them through `distilkit.distill.Distiller` (frozen teacher, named parts, non-finite checks).
Teacher distributions come from T4 `side_logits` (softmax) or from corner heatmaps (marginals); when the
teacher's bin count differs from the student's, `resample_distribution(..., anchor="start")` carries the
teacher distribution onto the student's bins: no empty bins, and the soft-argmax coordinate Σ p_i·i/K the
heads decode is kept (up to mass at the outermost bins), so the student learns the teacher's boxes.
"""

from __future__ import annotations

import functools
import math
import typing
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from distilkit.distill import attention_kd, box_loss, corner_to_sides, distribution_kd, feature_kd, resample_distribution
from distilkit.errors import DistilkitError
from distilkit.recipes.schema import StageKind
from distilkit.trackers.mixformerv2.token_targets import corner_attention_targets


def native_side_probs(teacher_out: dict[str, Any]) -> torch.Tensor:
    """Teacher outputs → side distributions (B, 4, K) on the teacher's own bins, order l t r b."""
    if "side_logits" in teacher_out:
        return teacher_out["side_logits"].float().softmax(dim=-1)
    if "corner_logits" in teacher_out:
        corners = teacher_out["corner_logits"].float()
        return corner_to_sides(corners[:, 0], corners[:, 1], from_logits=True)
    raise DistilkitError("the KL and attn losses need a teacher with a T4 head (side_logits) or a corner head (corner_logits)")


@dataclass(frozen=True)
class LossPart:
    """A loss a recipe stage can weight: `fn(student_out, teacher_out, batch, stage_loss)` → scalar, the stage
    kinds that accept it, and what it needs (a teacher, a model output to ask for, a T4-head student)."""

    fn: Callable[[dict[str, Any], Optional[dict[str, Any]], dict[str, torch.Tensor], "StageLoss"], torch.Tensor]
    kinds: frozenset[str]
    needs_teacher: bool = False
    output: Optional[str] = None  # forward(..., return_features=True) / return_pred_attention=True
    t4_student: bool = False


def _positive(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return batch["label"].float() > 0.5


def _box_part(name: str) -> Callable[..., torch.Tensor]:
    def part(out: dict[str, Any], teacher_out: Any, batch: dict[str, torch.Tensor], loss: "StageLoss") -> torch.Tensor:
        positive, pred = _positive(batch), out["boxes"]
        if not positive.any():
            return pred.sum() * 0.0
        return box_loss(pred[positive], batch["search_box"].float().clamp(0.0, 1.0)[positive])[name]
    return part


def _kl(out: dict[str, Any], teacher_out: Any, batch: dict[str, torch.Tensor], loss: "StageLoss") -> torch.Tensor:
    positive, logits = _positive(batch), out["side_logits"]
    target = resample_distribution(native_side_probs(teacher_out), logits.shape[-1], anchor="start")
    return distribution_kd(logits[positive], target[positive]) if positive.any() else logits.sum() * 0.0


def _attn(out: dict[str, Any], teacher_out: Any, batch: dict[str, torch.Tensor], loss: "StageLoss") -> torch.Tensor:
    """The prediction tokens' attention over the search tokens in the last `attention_layers` blocks (every
    head), distilled towards the teacher's box corners (`corner_attention_targets`)."""
    if "pred_attention" not in out:
        raise DistilkitError("the attn loss needs a student with prediction tokens (a T4 head)")
    positive = _positive(batch)
    layers = out["pred_attention"][-loss.attention_layers:]
    if not positive.any():
        return sum(a.sum() for a in layers) * 0.0
    grid = math.isqrt(layers[0].shape[-1])
    target = corner_attention_targets(native_side_probs(teacher_out)[positive], grid)[:, None]
    return sum(attention_kd(a[positive], target) for a in layers) / len(layers)


def _feature(out: dict[str, Any], teacher_out: Any, batch: dict[str, torch.Tensor], loss: "StageLoss") -> torch.Tensor:
    return feature_kd(out["features"], teacher_out["features"], loss.feature_pairs)


def _bce(out: dict[str, Any], teacher_out: Any, batch: dict[str, torch.Tensor], loss: "StageLoss") -> torch.Tensor:
    if "score" not in out:
        raise DistilkitError("the bce loss needs a model with a score head")
    return F.binary_cross_entropy_with_logits(out["score"].float(), batch["label"].float())


_SUPERVISED = frozenset({"teacher", "distill", "depth", "width"})
_DISTILLED = frozenset({"distill", "depth", "width"})

#: Every loss part a recipe can name, in the order they are computed and summed (the one place they are declared:
#: the schema's per-kind checks, the plan's head checks and training read it).
LOSS_PARTS: dict[str, LossPart] = {
    "l1": LossPart(_box_part("l1"), _SUPERVISED),
    "giou": LossPart(_box_part("giou"), _SUPERVISED),
    "ciou": LossPart(_box_part("ciou"), _SUPERVISED),
    "kl": LossPart(_kl, _DISTILLED, needs_teacher=True, t4_student=True),
    "attn": LossPart(_attn, _DISTILLED, needs_teacher=True, output="pred_attention", t4_student=True),
    "feature": LossPart(_feature, _DISTILLED, needs_teacher=True, output="features"),
    "bce": LossPart(_bce, frozenset({"score"})),
}

#: Loss parts each stage kind understands (weights are given per stage in the recipe).
LOSSES_BY_KIND: dict[str, frozenset[str]] = {
    kind: frozenset(name for name, part in LOSS_PARTS.items() if kind in part.kinds)
    for kind in typing.get_args(StageKind)
}

#: Loss parts that read outputs only a T4 student has: `kl` its side logits, `attn` its prediction-token attention.
#: (Every teacher head gives the side distributions they are compared with: T4 side logits or corner heatmaps.)
T4_STUDENT_LOSSES = tuple(name for name, part in LOSS_PARTS.items() if part.t4_student)


def head_problem(weights: dict[str, float], student_head: str) -> Optional[tuple[str, str]]:
    """(loss, why) for the first loss part the student's head cannot serve, or None; checked when a run is planned."""
    for loss in T4_STUDENT_LOSSES:
        if weights.get(loss) and student_head != "t4":
            return loss, (f"the {loss!r} loss needs a student with a T4 head (side_logits, prediction tokens), but this "
                          f"stage trains a {student_head!r}-head model; {' and '.join(T4_STUDENT_LOSSES)} need a T4 student")
    return None


class StageLoss:
    """One stage's loss weights over `LOSS_PARTS`: `parts()` are the named callables a `distill.Distiller` trains
    with; calling it directly gives (Σ w·part, {part: value}) the same way, for scripts and tests."""

    def __init__(self, weights: dict[str, float], feature_pairs: Optional[list[tuple[int, int]]] = None,
                 attention_layers: int = 4):
        unknown = sorted(set(weights) - set(LOSS_PARTS))
        if unknown:
            raise DistilkitError(f"unknown loss part(s) {unknown}; known: {', '.join(LOSS_PARTS)}")
        self.weights = {k: float(weights[k]) for k in LOSS_PARTS if weights.get(k, 0) != 0}
        self.feature_pairs = [tuple(p) for p in (feature_pairs or [])]
        self.attention_layers = int(attention_layers)

    @property
    def needs_teacher(self) -> bool:
        return any(LOSS_PARTS[k].needs_teacher for k in self.weights)

    @property
    def needs_pred_attention(self) -> bool:
        return any(LOSS_PARTS[k].output == "pred_attention" for k in self.weights)

    @property
    def needs_features(self) -> bool:
        return any(LOSS_PARTS[k].output == "features" for k in self.weights)

    def parts(self) -> dict[str, Callable[[Any, Any, Any], torch.Tensor]]:
        """name → fn(student_out, teacher_out, batch) for every weighted part, in `LOSS_PARTS` order."""
        return {name: functools.partial(_call_part, name, self) for name in self.weights}

    def __call__(self, out: dict[str, Any], teacher_out: Optional[dict[str, Any]],
                 batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {name: fn(out, teacher_out, batch) for name, fn in self.parts().items()}
        total = sum(self.weights[k] * v for k, v in parts.items())
        return total, parts


def _call_part(name: str, loss: StageLoss, out: Any, teacher_out: Any, batch: Any) -> torch.Tensor:
    """Looked up at call time, so a part replaced in `LOSS_PARTS` (e.g. by a test) is the one that runs."""
    return LOSS_PARTS[name].fn(out, teacher_out, batch, loss)
