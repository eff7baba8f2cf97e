"""The loss parts of MixFormerV2 stages (`LOSS_PARTS`): KL on side distributions, L1/GIoU/CIoU, feature MSE,
prediction-token attention distillation, score BCE.

Teacher distributions come from T4 `side_logits` (softmax) or from corner heatmaps (marginals); when the
teacher's bin count differs from the student's, `resample_distribution(..., anchor="start")` carries the
teacher distribution onto the student's bins: no empty bins, and the soft-argmax coordinate Σ p_i·i/K the
heads decode is kept (up to mass at the outermost bins), so the student learns the teacher's boxes.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from distilkit.distill import attention_kd, box_loss, corner_to_sides, distribution_kd, resample_distribution
from distilkit.errors import DistilkitError
from distilkit.recipes.losses import DISTILLED_KINDS, FEATURE_PART, SUPERVISED_KINDS, LossPart, StageLoss
from distilkit.trackers.mixformerv2.token_targets import corner_attention_targets


def native_side_probs(teacher_out: dict[str, Any]) -> torch.Tensor:
    """Teacher outputs → side distributions (B, 4, K) on the teacher's own bins, order l t r b."""
    if "side_logits" in teacher_out:
        return teacher_out["side_logits"].float().softmax(dim=-1)
    if "corner_logits" in teacher_out:
        corners = teacher_out["corner_logits"].float()
        return corner_to_sides(corners[:, 0], corners[:, 1], from_logits=True)
    raise DistilkitError("the KL and attn losses need a teacher with a T4 head (side_logits) or a corner head (corner_logits)")


def _positive(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return batch["label"].float() > 0.5


def _box_part(name: str) -> Callable[..., torch.Tensor]:
    def part(out: dict[str, Any], teacher_out: Any, batch: dict[str, torch.Tensor], loss: StageLoss) -> torch.Tensor:
        positive, pred = _positive(batch), out["boxes"]
        if not positive.any():
            return pred.sum() * 0.0
        return box_loss(pred[positive], batch["search_box"].float().clamp(0.0, 1.0)[positive])[name]
    return part


def _kl(out: dict[str, Any], teacher_out: Any, batch: dict[str, torch.Tensor], loss: StageLoss) -> torch.Tensor:
    positive, logits = _positive(batch), out["side_logits"]
    target = resample_distribution(native_side_probs(teacher_out), logits.shape[-1], anchor="start")
    return distribution_kd(logits[positive], target[positive]) if positive.any() else logits.sum() * 0.0


def _attn(out: dict[str, Any], teacher_out: Any, batch: dict[str, torch.Tensor], loss: StageLoss) -> torch.Tensor:
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


def _bce(out: dict[str, Any], teacher_out: Any, batch: dict[str, torch.Tensor], loss: StageLoss) -> torch.Tensor:
    if "score" not in out:
        raise DistilkitError("the bce loss needs a model with a score head")
    return F.binary_cross_entropy_with_logits(out["score"].float(), batch["label"].float())


#: Every loss part a MixFormerV2 recipe can name, in the order they are computed and summed.
LOSS_PARTS: dict[str, LossPart] = {
    "l1": LossPart(_box_part("l1"), SUPERVISED_KINDS),
    "giou": LossPart(_box_part("giou"), SUPERVISED_KINDS),
    "ciou": LossPart(_box_part("ciou"), SUPERVISED_KINDS),
    "kl": LossPart(_kl, DISTILLED_KINDS, needs_teacher=True),
    "attn": LossPart(_attn, DISTILLED_KINDS, needs_teacher=True, output="pred_attention"),
    "feature": FEATURE_PART,
    "bce": LossPart(_bce, frozenset({"score"})),
}

#: Loss parts that read outputs only a T4 student has: `kl` its side logits, `attn` its prediction-token attention.
#: (Every teacher head gives the side distributions they are compared with: T4 side logits or corner heatmaps.)
T4_STUDENT_LOSSES = ("kl", "attn")


def head_problem(weights: dict[str, float], student_head: str) -> Optional[tuple[str, str]]:
    """(loss, why) for the first loss part the student's head cannot serve, or None; checked when a run is planned."""
    for loss in T4_STUDENT_LOSSES:
        if weights.get(loss) and student_head != "t4":
            return loss, (f"the {loss!r} loss needs a student with a T4 head (side_logits, prediction tokens), but this "
                          f"stage trains a {student_head!r}-head model; {' and '.join(T4_STUDENT_LOSSES)} need a T4 student")
    return None


def stage_loss(weights: dict[str, float], feature_pairs: Optional[list[tuple[int, int]]] = None,
               attention_layers: int = 4) -> StageLoss:
    """A `StageLoss` over the MixFormerV2 parts (for scripts and tests)."""
    return StageLoss(weights, feature_pairs, attention_layers, parts=LOSS_PARTS)
