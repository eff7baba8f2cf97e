"""Box regression losses (L1, GIoU, CIoU) on normalised x1 y1 x2 y2 boxes, safe on degenerate boxes.

GIoU and CIoU follow torchvision.ops (`generalized_box_iou_loss`, `complete_box_iou_loss`) term
for term, including eps = 1e-7 in the IoU, enclosing-area and diagonal denominators, so valid
boxes (x1 < x2, y1 < y2) give the same values. Degenerate boxes are handled without NaN: widths and
heights are clamped at 0 for areas (a box with swapped corners has zero area, it does not count as
its mirror image), and the aspect term uses atan2 with a guard at w = h = 0.
A predicted box with swapped corners gets GIoU/CIoU values but no gradient from them: its raw-corner
enclosing box shrinks as the swap grows, so descending them would swap the corners further. L1
alone pulls such boxes back into order (the official STARK/MixFormer trainers drop GIoU for them too).
"""

from __future__ import annotations

import math

import torch

from distilkit.errors import DistilkitError

EPS = 1e-7
REDUCTIONS = ("mean", "sum", "none")


def _aspect_angle(w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """atan(w / h) for w, h ≥ 0, defined as 0 at w = h = 0 with zero (finite) gradient there."""
    empty = (w == 0) & (h == 0)
    angle = torch.atan2(torch.where(empty, torch.ones_like(w), w), torch.where(empty, torch.ones_like(h), h))
    return torch.where(empty, torch.zeros_like(angle), angle)


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return values
    if reduction == "sum":
        return values.sum()
    return values.mean() if values.numel() else values.sum() * 0.0


def box_loss(
    pred_xyxy: torch.Tensor, gt_xyxy: torch.Tensor, reduction: str = "mean"
) -> dict[str, torch.Tensor]:
    """{"l1", "giou", "ciou", "iou"} for (..., 4) boxes: 1 − GIoU, 1 − CIoU, and the detached IoU.

    Per box, "l1" is the mean absolute error over the 4 coordinates, so reduction="mean" equals
    `F.l1_loss(pred, gt)`. `reduction` is "mean", "sum" or "none" (shape of the leading dims).
    """
    if reduction not in REDUCTIONS:
        raise DistilkitError(f"box_loss: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if pred_xyxy.shape != gt_xyxy.shape or pred_xyxy.dim() == 0 or pred_xyxy.shape[-1] != 4:
        raise DistilkitError(
            f"box_loss: pred {tuple(pred_xyxy.shape)} and gt {tuple(gt_xyxy.shape)} "
            "must both be (..., 4) xyxy boxes"
        )
    if not pred_xyxy.is_floating_point():
        pred_xyxy = pred_xyxy.float()
    gt_xyxy = gt_xyxy.to(pred_xyxy.dtype)

    x1, y1, x2, y2 = pred_xyxy.unbind(dim=-1)
    x1g, y1g, x2g, y2g = gt_xyxy.unbind(dim=-1)
    w, h = (x2 - x1).clamp_min(0), (y2 - y1).clamp_min(0)
    wg, hg = (x2g - x1g).clamp_min(0), (y2g - y1g).clamp_min(0)

    inter_w = (torch.min(x2, x2g) - torch.max(x1, x1g)).clamp_min(0)
    inter_h = (torch.min(y2, y2g) - torch.max(y1, y1g)).clamp_min(0)
    inter = inter_w * inter_h
    union = w * h + wg * hg - inter
    iou = inter / (union + EPS)

    enclose_w = torch.max(x2, x2g) - torch.min(x1, x1g)
    enclose_h = torch.max(y2, y2g) - torch.min(y1, y1g)
    enclose_area = enclose_w.clamp_min(0) * enclose_h.clamp_min(0)
    giou = 1 - (iou - (enclose_area - union) / (enclose_area + EPS))

    diagonal_sq = enclose_w**2 + enclose_h**2 + EPS
    centre_sq = ((x1 + x2 - x1g - x2g) / 2) ** 2 + ((y1 + y2 - y1g - y2g) / 2) ** 2
    v = (4 / math.pi**2) * (_aspect_angle(wg, hg) - _aspect_angle(w, h)) ** 2
    with torch.no_grad():
        alpha = v / (1 - iou + v + EPS)
    ciou = 1 - iou + centre_sq / diagonal_sq + alpha * v

    ordered = (x2 >= x1) & (y2 >= y1)
    giou = torch.where(ordered, giou, giou.detach())
    ciou = torch.where(ordered, ciou, ciou.detach())

    l1 = (pred_xyxy - gt_xyxy).abs().mean(dim=-1)
    parts = {"l1": l1, "giou": giou, "ciou": ciou, "iou": iou.detach()}
    return {name: _reduce(value, reduction) for name, value in parts.items()}
