"""Width pruning on the flagship: a tiny MixFormerV2 taken from MLP ratio 4 to 1 (paper step 5)."""

from __future__ import annotations

import copy

import pytest
import torch

from distilkit import io
from distilkit.schedule import CosineSchedule
from distilkit.trackers.mixformerv2 import build_model
from distilkit.width import ProgressiveWidthPruner, reduce_mlp_ratio

pytestmark = pytest.mark.isa_sensitive  # float results: rerun under .ci/avx2.env

BLOCKS = "backbone.blocks"


def tiny_r4() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mixformerv2-s-tiny", mlp_ratio=4.0).eval()


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(3)
    return torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32), torch.randn(2, 3, 64, 64)


def test_ratio_4_to_1_slices_mlps_only(inputs):
    model = tiny_r4()
    dim = model.backbone.blocks[0].mlp.fc1.in_features
    assert model.backbone.blocks[0].mlp.fc1.out_features == 4 * dim
    original = copy.deepcopy(model)
    before = {n: tuple(p.shape) for n, p in model.named_parameters()}
    report = reduce_mlp_ratio(model, 1.0, blocks=BLOCKS, example_inputs=inputs)
    after = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert [(b.hidden_before, b.hidden_after) for b in report.blocks] == [(4 * dim, dim)] * len(model.backbone.blocks)
    for block in model.backbone.blocks:
        assert block.mlp.fc1.out_features == block.mlp.fc2.in_features == dim
    assert {n: s for n, s in after.items() if ".mlp.fc" not in n} == {n: s for n, s in before.items() if ".mlp.fc" not in n}
    # Same function as the original with the dropped hidden channels zeroed at fc2's input.
    with torch.no_grad():
        for block, row in zip(original.backbone.blocks, report.blocks):
            mask = torch.zeros(row.hidden_before)
            mask[list(row.kept)] = 1
            block.mlp.fc2.weight.mul_(mask)
        got, want = model(*inputs), original(*inputs)
    assert set(got) == set(want)
    for key in ("boxes", "side_logits", "score"):
        assert got[key].shape == want[key].shape
        torch.testing.assert_close(got[key], want[key], atol=1e-5, rtol=1e-5)


def test_progressive_then_io_round_trip(inputs, tmp_path):
    model = tiny_r4()
    sliced = copy.deepcopy(model)
    reduce_mlp_ratio(sliced, 1.0, blocks=BLOCKS)
    pruner = ProgressiveWidthPruner(model, 1.0, blocks=BLOCKS, schedule=CosineSchedule(m=3))
    with torch.no_grad():
        y1 = model(*inputs)["side_logits"]
        pruner.set_epoch(3)
        y0 = model(*inputs)["side_logits"]
        assert (y0 - sliced(*inputs)["side_logits"]).abs().max() <= 1e-5
        assert (y1 - y0).abs().max() > 1e-3  # the gates did something
    pruner.finalize()
    io.save(model, tmp_path / "r1")
    loaded = io.load(tmp_path / "r1").eval()
    assert {n: p.shape for n, p in loaded.named_parameters()} == {n: p.shape for n, p in model.named_parameters()}
    with torch.no_grad():
        got, want = loaded(*inputs), model(*inputs)
    for key in ("boxes", "side_logits", "score"):
        assert torch.equal(got[key], want[key])


def test_full_size_s_at_ratio_4_reduces_to_the_official_s_parameter_count():
    """The official MixFormerV2-S (4 layers, MLP ratio 1) has 16,228,897 parameters."""
    torch.manual_seed(0)
    model = build_model("mixformerv2-s", mlp_ratio=4.0)
    report = reduce_mlp_ratio(model, 1.0, blocks=BLOCKS)
    assert report.params_before == 16_228_897 + 4 * 3 * 768 * (768 + 1 + 768)
    assert report.params_after == 16_228_897
