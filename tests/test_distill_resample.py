"""distill.resample_distribution: mass, expectation, no comb, no ripple, identity, gradients, errors."""

from __future__ import annotations

import pytest
import torch

from distilkit.distill import resample_distribution
from distilkit.errors import DistilkitError

SIZES = [(14, 96), (72, 96), (8, 48), (3, 4), (2, 3), (1, 7), (96, 72), (96, 14), (5, 1)]


def positions(bins: int, anchor: str) -> torch.Tensor:
    return (torch.arange(bins, dtype=torch.float64) + (0.5 if anchor == "centre" else 0.0)) / bins


def peaked(k: int, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.softmax(torch.randn(3, 4, k, dtype=torch.float64) * 3, dim=-1)


@pytest.mark.parametrize("k, bins", SIZES)
@pytest.mark.parametrize("anchor", ["centre", "start"])
def test_mass_is_conserved_and_nothing_negative(k, bins, anchor):
    q = resample_distribution(peaked(k), bins, anchor=anchor)
    assert q.shape == (3, 4, bins) and (q >= 0).all()
    torch.testing.assert_close(q.sum(-1), torch.ones(3, 4, dtype=torch.float64))


@pytest.mark.parametrize("k, bins", [(14, 96), (72, 96), (8, 48), (3, 4), (2, 3), (1, 7)])
def test_expectation_of_bin_centres_is_kept_exactly_when_growing(k, bins):
    p = peaked(k)
    q = resample_distribution(p, bins)
    torch.testing.assert_close((q * positions(bins, "centre")).sum(-1), (p * positions(k, "centre")).sum(-1))


@pytest.mark.parametrize("k, bins", [(96, 72), (96, 14)])
def test_expectation_moves_at_most_half_a_new_bin_when_shrinking(k, bins):
    p = peaked(k)
    q = resample_distribution(p, bins)
    shift = ((q * positions(bins, "centre")).sum(-1) - (p * positions(k, "centre")).sum(-1)).abs()
    assert shift.max() <= 0.5 / bins


def test_start_anchor_keeps_the_decoded_soft_argmax_coordinate_away_from_the_edges():
    """anchor='start': bin i stands for i/K, the heads' coordinate; a teacher not touching the edge bins decodes
    to the same box after resampling (the old nearest-bin split did too, but with a comb)."""
    p = torch.zeros(2, 4, 14, dtype=torch.float64)
    p[..., 3:11] = torch.softmax(torch.randn(2, 4, 8, dtype=torch.float64), dim=-1)
    q = resample_distribution(p, 96, anchor="start")
    torch.testing.assert_close((q * positions(96, "start")).sum(-1), (p * positions(14, "start")).sum(-1))


@pytest.mark.parametrize("k, bins", [(14, 96), (72, 96)])
def test_no_comb_and_no_ripple(k, bins):
    """14 → 96 by nearest-bin splitting left 70 of 96 bins always empty; 72 → 96 had a ±33 % ripple."""
    uniform = torch.full((k,), 1.0 / k, dtype=torch.float64)
    torch.testing.assert_close(resample_distribution(uniform, bins), torch.full((bins,), 1.0 / bins, dtype=torch.float64))
    p = peaked(k)
    q = resample_distribution(p, bins)
    assert (q > 0).all()  # the density is positive everywhere, so is every new bin


def test_empty_source_bins_stay_empty_far_from_the_mass():
    p = torch.zeros(10, dtype=torch.float64)
    p[4] = 1.0  # uniform on [0.4, 0.5]
    q = resample_distribution(p, 100)
    assert (q[40:50] > 0).all() and q[:39].sum() == 0 and q[51:].sum() == 0


def test_equal_sizes_return_the_input_itself_and_gradients_flow():
    p = peaked(8)
    assert resample_distribution(p, 8) is p
    logits = torch.randn(2, 4, 14, requires_grad=True)
    resample_distribution(logits.softmax(-1), 96).square().sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_float32_and_numpy_bin_counts():
    import numpy as np

    q = resample_distribution(torch.softmax(torch.randn(4, 14), -1), np.int64(96))
    assert q.dtype == torch.float32 and q.shape == (4, 96)


@pytest.mark.parametrize("args, message", [
    ((torch.ones(4, dtype=torch.long), 8), "floating tensor"),
    (([0.5, 0.5], 8), "floating tensor"),
    ((torch.ones(4), 0), "bins must be >= 1"),
    ((torch.ones(4), 2.5), "bins must be an int"),
    ((torch.ones(4, 0), 3), "no bins"),
])
def test_bad_arguments(args, message):
    with pytest.raises(DistilkitError, match=message):
        resample_distribution(*args)
    with pytest.raises(DistilkitError, match="unknown anchor 'middle'"):
        resample_distribution(torch.ones(4), 8, anchor="middle")
