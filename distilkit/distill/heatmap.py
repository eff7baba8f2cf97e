"""Dense corner heatmaps -> per-side distributions (dense-to-sparse distillation) and back to boxes.

Heatmaps are square, indexed row-major: flat index = y·W + x. A side distribution over K bins
shares the heatmap's bin grid (K = H = W), so the teacher's soft-argmax coordinate Σ p_i·i/K equals
the expectation of the matching side distribution.
"""

from __future__ import annotations

import math

import torch

from distilkit.distill._checks import check_probabilities
from distilkit.errors import DistilkitError


def _as_square_maps(heatmap: torch.Tensor, name: str) -> torch.Tensor:
    """(B, H·W) or (B, H, W) -> (B, H, W) with H == W; anything else is a user error."""
    if heatmap.dim() == 3:
        if heatmap.shape[1] != heatmap.shape[2]:
            raise DistilkitError(
                f"corner_to_sides: {name} heatmap is {tuple(heatmap.shape)}, not square (B, K, K)"
            )
        return heatmap
    if heatmap.dim() == 2:
        side = math.isqrt(heatmap.shape[1])
        if side * side != heatmap.shape[1] or side == 0:
            raise DistilkitError(
                f"corner_to_sides: {name} heatmap has {heatmap.shape[1]} cells, not a square number (B, K·K)"
            )
        return heatmap.reshape(heatmap.shape[0], side, side)
    raise DistilkitError(
        f"corner_to_sides: {name} heatmap must be (B, H·W) or (B, H, W), got {tuple(heatmap.shape)}"
    )


def corner_to_sides(prob_tl: torch.Tensor, prob_br: torch.Tensor, from_logits: bool = False) -> torch.Tensor:
    """Marginalise top-left / bottom-right corner heatmaps into side distributions (B, 4, K): l, t, r, b.

    Left and right are x marginals (sum over rows), top and bottom are y marginals (sum over
    columns). With `from_logits=True` each map is first softmaxed over its H·W cells.
    """
    tl = _as_square_maps(prob_tl, "top-left")
    br = _as_square_maps(prob_br, "bottom-right")
    if tl.shape != br.shape:
        raise DistilkitError(
            f"corner_to_sides: top-left {tuple(tl.shape)} and bottom-right {tuple(br.shape)} "
            "heatmaps differ in shape"
        )
    batch, side, _ = tl.shape
    if from_logits:
        tl = tl.reshape(batch, -1).softmax(dim=-1).reshape(batch, side, side)
        br = br.reshape(batch, -1).softmax(dim=-1).reshape(batch, side, side)
    else:
        hint = "pass from_logits=True for raw heatmap logits"
        check_probabilities(tl.reshape(batch, -1), -1, "corner_to_sides: top-left heatmap", hint)
        check_probabilities(br.reshape(batch, -1), -1, "corner_to_sides: bottom-right heatmap", hint)
    left, top = tl.sum(dim=1), tl.sum(dim=2)
    right, bottom = br.sum(dim=1), br.sum(dim=2)
    return torch.stack((left, top, right, bottom), dim=1)


def sides_to_box(sides: torch.Tensor, from_logits: bool = False) -> torch.Tensor:
    """Expected coordinates of side distributions (..., 4, K) -> normalised boxes (..., 4) in bin units / K.

    Bin i stands for coordinate i/K (the corner heads' soft-argmax convention), so with order
    l, t, r, b the result is an x1 y1 x2 y2 box in [0, (K-1)/K].
    """
    if sides.dim() < 2 or sides.shape[-2] != 4:
        raise DistilkitError(
            f"sides_to_box: expected (..., 4, K) side distributions, got {tuple(sides.shape)}"
        )
    probs = sides.softmax(dim=-1) if from_logits else sides
    bins = sides.shape[-1]
    positions = torch.arange(bins, device=sides.device, dtype=probs.dtype) / bins
    return (probs * positions).sum(dim=-1)
