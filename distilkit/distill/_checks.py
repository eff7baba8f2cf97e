"""Input checks shared by the distillation losses: one-line DistilkitError messages."""

from __future__ import annotations

import torch

from distilkit.checks import as_number
from distilkit.errors import DistilkitError


def check_probabilities(probs: torch.Tensor, dim: int, what: str, hint: str) -> None:
    """Raise when `probs` has negative entries or does not sum to 1 along `dim` (catches logits)."""
    tol = 1e-3 if probs.dtype in (torch.float32, torch.float64) else 1e-2
    values = probs.detach().float()
    if values.numel() == 0:
        return
    if not torch.isfinite(values).all():
        raise DistilkitError(f"{what} contains NaN or infinite values")
    total = values.sum(dim=dim)
    if values.min() < -tol or (total - 1).abs().max() > tol:
        raise DistilkitError(
            f"{what} is not a probability distribution (min {values.min().item():.3g}, "
            f"sums in [{total.min().item():.4g}, {total.max().item():.4g}]); {hint}"
        )


def check_temperature(temperature: float) -> None:
    """Temperatures must be positive finite numbers (numpy scalars included)."""
    as_number(temperature, "temperature", above=0)
