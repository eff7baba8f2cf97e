"""Layer selection (paper's skip rule, first/last, influence, explicit) and LayerMap renumbering."""

from __future__ import annotations

import pytest

from distilkit.depth import LayerMap, select_layers, select_layers_by_influence
from distilkit.errors import DistilkitError


def test_skip_reproduces_paper() -> None:
    assert select_layers(12, 8) == [0, 3, 6, 9]
    kept_1based = lambda depth, rm: [i + 1 for i in range(depth) if i not in rm]  # noqa: E731
    assert kept_1based(12, select_layers(12, 4, "skip")) == [3, 6, 9, 12]
    assert kept_1based(8, select_layers(8, 4, "skip")) == [2, 4, 6, 8]
    assert select_layers(12, 12) == []


def test_first_last_explicit_influence() -> None:
    assert select_layers(6, 2, "first") == [2, 3, 4, 5]
    assert select_layers(6, 2, "last") == [0, 1, 2, 3]
    assert select_layers(6, method=[4, 1]) == [1, 4]
    assert select_layers(6, 4, method=(1, 4)) == [1, 4]
    scores = [0.5, 0.1, 0.9, 0.1, 0.3, 0.8]
    assert select_layers_by_influence(scores, 3) == [1, 3, 4]
    assert select_layers(6, 3, "influence", scores=scores) == [1, 3, 4]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: select_layers(12, 0), "keep must be >= 1"),
        (lambda: select_layers(12, 13), "exceeds depth"),
        (lambda: select_layers(12, 4, "middle"), "unknown layer selection method"),
        (lambda: select_layers(4, method=[0, 4]), "out of range"),
        (lambda: select_layers(4, method=[1, 1]), "duplicate"),
        (lambda: select_layers(3, method=[0, 1, 2]), "every layer"),
        (lambda: select_layers(6, 3, method=[0]), "disagrees"),
        (lambda: select_layers(6, 3, "influence"), "needs scores"),
        (lambda: select_layers(6, 3, "influence", scores=[1.0]), "6"),
        (lambda: select_layers(4, 2, "influence", scores=[0.3, float("nan"), 0.2, 0.05]), "block 1 must be a finite number, got "
                                                                                          "nan"),
        (lambda: select_layers_by_influence([0.3, None], 1), "block 1 must be a finite number, got None"),
        (lambda: select_layers_by_influence([], 1), "no influence scores"),
    ],
)
def test_bad_requests_raise(call, match: str) -> None:
    with pytest.raises(DistilkitError, match=match):
        call()


def test_layer_map_remaps_feature_pairs() -> None:
    lm = LayerMap(12, (0, 3, 6, 9))
    pairs = [(2, 2), (5, 5), (8, 8), (11, 11)]
    assert lm.remap(pairs) == [(1, 2), (3, 5), (5, 8), (7, 11)]
    assert lm.new_depth == 8 and lm.kept == [1, 2, 4, 5, 7, 8, 10, 11]
    with pytest.raises(DistilkitError, match="layer 3 was removed"):
        lm.remap([(3, 3)])
    assert lm.remap([(3, 3), (11, 11)], drop_removed=True) == [(7, 11)]
    assert LayerMap.from_dict(lm.to_dict()) == lm
    with pytest.raises(DistilkitError, match="out of range"):
        lm.remap([(12, 0)])
