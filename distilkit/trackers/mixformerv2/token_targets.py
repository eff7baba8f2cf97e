"""Where MixFormerV2's prediction tokens should look: attention targets built from side distributions.

Each token reads its coordinate from the search tokens it attends to, so it is pointed at a box corner
that carries that coordinate: l → top-left (x1, y1), r → bottom-right (x2, y2), t → top-right
(x2, y1), b → bottom-left (x1, y2). Four distinct corners keep the four tokens apart (with l and t on
the same corner their states, and so their outputs through the shared head, would coincide). Each
corner map is the outer product of two side distributions (a dense teacher's marginals or a T4
teacher's softmax), pooled onto the search-token grid.
"""

from __future__ import annotations

import torch

from distilkit.errors import DistilkitError


def pool_bins(probs: torch.Tensor, cells: int) -> torch.Tensor:
    """(…, K) distributions over bins [i/K, (i+1)/K) → (…, cells) over [j/cells, (j+1)/cells), by overlap."""
    k = probs.shape[-1]
    if k == cells:
        return probs
    edges_k = torch.arange(k + 1, device=probs.device, dtype=probs.dtype) / k
    edges_c = torch.arange(cells + 1, device=probs.device, dtype=probs.dtype) / cells
    lo = torch.maximum(edges_k[:-1, None], edges_c[None, :-1])
    hi = torch.minimum(edges_k[1:, None], edges_c[None, 1:])
    overlap = (hi - lo).clamp_min(0) * k  # (K, cells): share of bin i inside cell j, rows sum to 1
    return probs @ overlap


def corner_attention_targets(side_probs: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, 4, K) side distributions, order l t r b → (B, 4, grid²) targets for the tokens in l r t b order,
    row-major over the search grid (the layout of `MixFormerV2.forward(..., return_pred_attention=True)`)."""
    if side_probs.dim() != 3 or side_probs.shape[1] != 4:
        raise DistilkitError("corner_attention_targets: side_probs must be (B, 4, K) in l t r b order, got "
                             f"{tuple(side_probs.shape)}")
    left, top, right, bottom = pool_bins(side_probs.float(), grid).unbind(dim=1)

    def corner(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
        return (py[:, :, None] * px[:, None, :]).flatten(1)

    return torch.stack([corner(left, top), corner(right, bottom), corner(right, top), corner(left, bottom)], dim=1)


__all__ = ["corner_attention_targets", "pool_bins"]
