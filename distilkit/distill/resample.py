"""Distributions over K bins onto another number of bins, without the comb or ripple of nearest-bin splitting.

The source is read as a piecewise-constant density (bin i uniform over its cell) and integrated over the
new cells, so every new cell the density touches gets mass and a uniform density stays uniform. Where the
mass inside a new cell is not centred on the cell's position, the off-centre part moves to the neighbour
on that side (at most half of the cell's mass), which keeps the expectation of bin positions exactly (up
to mass beyond the outermost new positions, which stays in the edge bins).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from distilkit.checks import as_int
from distilkit.errors import DistilkitError

ANCHORS = ("centre", "start")


@lru_cache(maxsize=64)
def _maps(source: int, bins: int, anchor: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(source, bins) float64 matrices: `mass` (probs @ mass integrates the density over the new cells) and
    `offset` (probs @ offset is each new cell's mass times its centre of mass, in bins from its position)."""
    shift = 0.0 if anchor == "centre" else -0.5  # "start": bin i stands for i/K, its cell centred there
    src = (torch.arange(source + 1, dtype=torch.float64) + shift) / source  # cell edges
    dst = (torch.arange(bins + 1, dtype=torch.float64) + shift) / bins
    dst[0], dst[-1] = min(dst[0].item(), src[0].item()), max(dst[-1].item(), src[-1].item())  # edge cells take the rest
    lo = torch.maximum(src[:-1, None], dst[None, :-1])
    hi = torch.minimum(src[1:, None], dst[None, 1:])
    mass = (hi - lo).clamp_min(0.0) * source  # share of source bin i inside new cell j
    centre = (lo + hi) / 2 * bins - shift - 0.5  # overlap centres, in new-bin index units
    return mass, mass * (centre - torch.arange(bins, dtype=torch.float64))


def resample_distribution(probs: torch.Tensor, bins: int, *, anchor: str = "centre") -> torch.Tensor:
    """(…, K) distributions → (…, bins): integrate the piecewise-constant density on [0, 1] over the new bins.

    Mass is conserved, no new bin is empty where the source density is positive, a uniform stays uniform,
    equal sizes return `probs` itself, and the expectation of bin positions is kept: exactly when growing
    (up to mass beyond the outermost new positions, which stays in the edge bins), within half a new bin
    when shrinking. anchor="centre": bin i of K covers
    [i/K, (i+1)/K] and stands for its centre (i + ½)/K. anchor="start": bin i stands for i/K, the soft-argmax
    coordinate of distilkit's (and the official) T4 and corner heads, so a resampled teacher decodes to the
    same box; its cell is centred on i/K. Differentiable (piecewise linear in probs)."""
    if not isinstance(probs, torch.Tensor) or not probs.is_floating_point() or probs.dim() < 1:
        raise DistilkitError(f"resample_distribution: probs must be a floating tensor (…, K), got "
                             f"{type(probs).__name__ if not isinstance(probs, torch.Tensor) else probs.dtype}")
    if anchor not in ANCHORS:
        raise DistilkitError(f"resample_distribution: unknown anchor {anchor!r}; expected one of {list(ANCHORS)}")
    bins = as_int(bins, "bins", minimum=1)
    source = probs.shape[-1]
    if source < 1:
        raise DistilkitError("resample_distribution: probs has no bins (last dimension 0)")
    if source == bins:
        return probs
    mass, offset = (m.to(device=probs.device, dtype=probs.dtype) for m in _maps(source, bins, anchor))
    cells, shift = probs @ mass, probs @ offset  # |shift| <= cells / 2: a centre of mass stays in its cell
    right = shift.clamp_min(0.0)[..., :-1]  # the last cell has no right neighbour (nor the first a left one)
    left = (-shift).clamp_min(0.0)[..., 1:]
    return cells - F.pad(right, (0, 1)) - F.pad(left, (1, 0)) + F.pad(right, (1, 0)) + F.pad(left, (0, 1))


__all__ = ["ANCHORS", "resample_distribution"]
