from __future__ import annotations

import pytest
import torch

from distilkit.distill import corner_to_sides, sides_to_box
from distilkit.errors import DistilkitError


def one_hot_map(batch: int, side: int, x: int, y: int) -> torch.Tensor:
    heat = torch.zeros(batch, side, side)
    heat[:, y, x] = 1.0
    return heat


def test_point_mass_gives_one_hot_sides_in_order_l_t_r_b() -> None:
    tl, br = one_hot_map(2, 6, x=1, y=4), one_hot_map(2, 6, x=5, y=2)
    sides = corner_to_sides(tl.flatten(1), br.flatten(1))
    assert sides.shape == (2, 4, 6)
    assert sides.argmax(dim=-1).tolist() == [[1, 4, 5, 2]] * 2
    assert torch.equal(sides.amax(dim=-1), torch.ones(2, 4))


def test_marginals_sum_to_one_and_match_manual_sums() -> None:
    torch.manual_seed(0)
    logits_tl, logits_br = torch.randn(3, 49), torch.randn(3, 49)
    sides = corner_to_sides(logits_tl, logits_br, from_logits=True)
    torch.testing.assert_close(sides.sum(-1), torch.ones(3, 4))
    tl = logits_tl.softmax(-1).view(3, 7, 7)  # [b, y, x]
    torch.testing.assert_close(sides[:, 0], tl.sum(dim=1))  # left: x marginal
    torch.testing.assert_close(sides[:, 1], tl.sum(dim=2))  # top: y marginal


def test_accepts_three_dim_maps_equal_to_flat() -> None:
    probs = torch.rand(2, 5, 5)
    probs = probs / probs.sum(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(
        corner_to_sides(probs, probs), corner_to_sides(probs.flatten(1), probs.flatten(1))
    )


def test_soft_argmax_of_heatmap_equals_expectation_of_sides() -> None:
    torch.manual_seed(1)
    side = 8
    tl = torch.randn(2, side * side).softmax(-1)
    br = torch.randn(2, side * side).softmax(-1)
    idx = torch.arange(side * side)
    xs, ys = (idx % side).float() / side, (idx // side).float() / side
    expected = torch.stack([(tl * xs).sum(-1), (tl * ys).sum(-1), (br * xs).sum(-1), (br * ys).sum(-1)], -1)
    torch.testing.assert_close(sides_to_box(corner_to_sides(tl, br)), expected)


@pytest.mark.parametrize("shape", [(2, 12), (2, 3, 4), (2,), (1, 2, 3, 3)])
def test_non_square_maps_raise(shape: tuple[int, ...]) -> None:
    heat = torch.full(shape, 1.0)
    with pytest.raises(DistilkitError, match="corner_to_sides"):
        corner_to_sides(heat, heat, from_logits=True)


def test_logits_passed_as_probabilities_raise_with_hint() -> None:
    with pytest.raises(DistilkitError, match="from_logits=True"):
        corner_to_sides(torch.randn(2, 16), torch.randn(2, 16))


def test_mismatched_corner_shapes_raise() -> None:
    with pytest.raises(DistilkitError, match="differ"):
        corner_to_sides(torch.randn(2, 16), torch.randn(2, 25), from_logits=True)
