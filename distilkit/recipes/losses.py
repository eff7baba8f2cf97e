"""The loss of one stage: weighted parts (KL on side distributions, L1/GIoU/CIoU, feature MSE, prediction-token
attention distillation, score BCE).

Parts are returned unweighted (for display and non-finite checks) next to their weighted total.
Teacher distributions come from T4 `side_logits` (softmax) or from corner heatmaps (marginals); when the
teacher's bin count differs from the student's, `resample_distribution(..., anchor="start")` carries the
teacher distribution onto the student's bins: no empty bins, and the soft-argmax coordinate Σ p_i·i/K the
heads decode is kept (up to mass at the outermost bins), so the student learns the teacher's boxes.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F

from distilkit.distill import attention_kd, box_loss, corner_to_sides, distribution_kd, feature_kd, resample_distribution
from distilkit.errors import DistilkitError
from distilkit.trackers.mixformerv2.token_targets import corner_attention_targets


def native_side_probs(teacher_out: dict[str, Any]) -> torch.Tensor:
    """Teacher outputs → side distributions (B, 4, K) on the teacher's own bins, order l t r b."""
    if "side_logits" in teacher_out:
        return teacher_out["side_logits"].float().softmax(dim=-1)
    if "corner_logits" in teacher_out:
        corners = teacher_out["corner_logits"].float()
        return corner_to_sides(corners[:, 0], corners[:, 1], from_logits=True)
    raise DistilkitError("the KL and attn losses need a teacher with a T4 head (side_logits) or a corner head (corner_logits)")


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


class StageLoss:
    """Callable (student_out, teacher_out, batch) → (total, {part: value}) for one stage's loss weights.

    `attn`: the prediction tokens' attention over the search tokens in the last `attention_layers`
    blocks (every head) is distilled towards the teacher's box corners (`corner_attention_targets`).
    """

    def __init__(self, weights: dict[str, float], feature_pairs: Optional[list[tuple[int, int]]] = None,
                 attention_layers: int = 4):
        self.weights = {k: float(v) for k, v in weights.items() if v != 0}
        self.feature_pairs = [tuple(p) for p in (feature_pairs or [])]
        self.attention_layers = int(attention_layers)

    @property
    def needs_teacher(self) -> bool:
        return bool({"kl", "feature", "attn"} & set(self.weights))

    @property
    def needs_pred_attention(self) -> bool:
        return "attn" in self.weights

    @property
    def needs_features(self) -> bool:
        return "feature" in self.weights

    def __call__(self, out: dict[str, Any], teacher_out: Optional[dict[str, Any]],
                 batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts: dict[str, torch.Tensor] = {}
        w = self.weights
        positive = batch["label"].float() > 0.5
        if {"l1", "giou", "ciou"} & set(w):
            gt = batch["search_box"].float().clamp(0.0, 1.0)
            pred = out["boxes"]
            boxes = box_loss(pred[positive], gt[positive]) if positive.any() else None
            for name in ("l1", "giou", "ciou"):
                if name in w:
                    parts[name] = boxes[name] if boxes is not None else pred.sum() * 0.0
        sides = native_side_probs(teacher_out) if {"kl", "attn"} & set(w) else None  # shared by kl and attn
        if "kl" in w:
            logits = out["side_logits"]
            target = resample_distribution(sides, logits.shape[-1], anchor="start")
            parts["kl"] = distribution_kd(logits[positive], target[positive]) if positive.any() else logits.sum() * 0.0
        if "attn" in w:
            parts["attn"] = self._attention(out, sides, positive)
        if "feature" in w:
            parts["feature"] = feature_kd(out["features"], teacher_out["features"], self.feature_pairs)
        if "bce" in w:
            if "score" not in out:
                raise DistilkitError("the bce loss needs a model with a score head")
            parts["bce"] = F.binary_cross_entropy_with_logits(out["score"].float(), batch["label"].float())
        total = sum(w[k] * v for k, v in parts.items())
        return total, parts

    def _attention(self, out: dict[str, Any], sides: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
        if "pred_attention" not in out:
            raise DistilkitError("the attn loss needs a student with prediction tokens (a T4 head)")
        layers = out["pred_attention"][-self.attention_layers:]
        if not positive.any():
            return sum(a.sum() for a in layers) * 0.0
        grid = math.isqrt(layers[0].shape[-1])
        target = corner_attention_targets(sides[positive], grid)[:, None]
        return sum(attention_kd(a[positive], target) for a in layers) / len(layers)
