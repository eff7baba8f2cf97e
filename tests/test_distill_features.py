from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distilkit.distill import FeatureProjector, feature_kd
from distilkit.errors import DistilkitError


def feats(n: int, width: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 5, width, generator=gen) for _ in range(n)]


def test_mean_of_pairwise_mse() -> None:
    student, teacher = feats(8, 16, 0), feats(12, 16, 1)
    pairs = [(1, 2), (3, 5), (7, 11)]
    expected = torch.stack([F.mse_loss(student[s], teacher[t]) for s, t in pairs]).mean()
    torch.testing.assert_close(feature_kd(student, teacher, pairs), expected)
    assert feature_kd(teacher, teacher, [(0, 0), (4, 4)]).item() == 0


def test_accepts_mappings_and_detaches_teacher() -> None:
    student = {3: torch.randn(2, 4, 8, requires_grad=True)}
    teacher = {9: torch.randn(2, 4, 8, requires_grad=True)}
    feature_kd(student, teacher, [(3, 9)]).backward()
    assert student[3].grad is not None and teacher[9].grad is None


def test_shape_mismatch_names_the_pair() -> None:
    with pytest.raises(DistilkitError, match=r"pair \(1, 2\).*FeatureProjector"):
        feature_kd(feats(4, 8, 0), feats(4, 16, 1), [(1, 2)])


def test_missing_layer_names_the_pair() -> None:
    with pytest.raises(DistilkitError, match=r"pair \(9, 1\): student layer 9"):
        feature_kd(feats(4, 8, 0), feats(4, 8, 1), [(9, 1)])
    with pytest.raises(DistilkitError, match="no .* pairs"):
        feature_kd(feats(4, 8, 0), feats(4, 8, 1), [])


def test_projector_maps_widths_and_learns() -> None:
    torch.manual_seed(0)
    student, teacher = feats(4, 8, 0), feats(4, 16, 1)
    pairs = [(1, 1), (3, 2)]
    proj = FeatureProjector(pairs, student_dims=8, teacher_dims={1: 16, 2: 16})
    assert sorted(proj.proj.keys()) == ["1->1", "3->2"]
    opt = torch.optim.Adam(proj.parameters(), lr=0.05)
    first = feature_kd(student, teacher, pairs, projector=proj)
    for _ in range(30):
        loss = feature_kd(student, teacher, pairs, projector=proj)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first.item() * 0.9


def test_projector_identity_for_equal_widths_and_unknown_pair_error() -> None:
    proj = FeatureProjector([(0, 0)], 8, 8)
    x = torch.randn(2, 3, 8)
    assert proj((0, 0), x) is x and len(list(proj.parameters())) == 0
    with pytest.raises(DistilkitError, match="unknown"):
        proj((1, 1), x)
    with pytest.raises(DistilkitError, match="teacher width"):
        FeatureProjector([(0, 5)], 8, [16, 16])


def test_projector_renumber_keeps_weights() -> None:
    proj = FeatureProjector([(2, 2), (5, 5)], 8, 16)
    weight = proj.proj["5->5"].weight
    proj.renumber([(1, 2), (3, 5)])  # e.g. LayerMap.remap after removing student layers
    assert proj.pairs == [(1, 2), (3, 5)] and proj.proj["3->5"].weight is weight
    with pytest.raises(DistilkitError, match="2 existing"):
        proj.renumber([(0, 0)])


def test_projector_follows_a_layer_map_dropping_removed_layers() -> None:
    from distilkit.depth import LayerMap

    layer_map = LayerMap(old_depth=12, removed=(0, 3, 6, 9))
    proj = FeatureProjector([(2, 2), (3, 5), (11, 11)], 8, 16)
    weights = proj.proj["2->2"].weight, proj.proj["11->11"].weight
    with pytest.raises(DistilkitError, match="layer 3 was removed"):
        proj.apply_layer_map(layer_map)
    assert proj.pairs == [(2, 2), (3, 5), (11, 11)], "a refused remap must leave the projector as it was"
    assert proj.apply_layer_map(layer_map, drop_removed=True) == [(1, 2), (7, 11)]
    assert proj.pairs == [(1, 2), (7, 11)] and set(proj.proj) == {"1->2", "7->11"}
    assert proj.proj["1->2"].weight is weights[0] and proj.proj["7->11"].weight is weights[1]
    with pytest.raises(DistilkitError, match="every pair"):
        FeatureProjector([(3, 3)], 8, 16).apply_layer_map(layer_map, drop_removed=True)


def test_pairs_from_layer_map_remap_after_depth_pruning() -> None:
    from distilkit.depth import LayerMap

    pairs = LayerMap(old_depth=12, removed=(0, 3, 6, 9)).remap([(2, 2), (5, 5), (8, 8), (11, 11)])
    student, teacher = feats(8, 16, 0), feats(12, 16, 1)
    expected = torch.stack([F.mse_loss(student[s], teacher[t]) for s, t in [(1, 2), (3, 5), (5, 8), (7, 11)]])
    torch.testing.assert_close(feature_kd(student, teacher, pairs), expected.mean())
