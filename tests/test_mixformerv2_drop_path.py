"""Stochastic depth in the MixViT/MixFormerV2 backbone (config `drop_path_rate`, `set_drop_path`): active in
training, the identity in eval (template cache exact), PMDP's branch hooks still exact, io round trips."""

from __future__ import annotations

import json

import pytest
import torch

import distilkit.io as dio
from distilkit.depth import LinearSchedule, ProgressiveDepthPruner
from distilkit.errors import DistilkitError
from distilkit.trackers.mixformerv2 import build_model

pytestmark = pytest.mark.isa_sensitive  # float results: rerun under .ci/avx2.env


def inputs(model, batch: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    cfg = model.config
    g = torch.Generator().manual_seed(1)
    t = torch.randn(batch, 3, cfg.template_size, cfg.template_size, generator=g)
    return t, torch.randn(t.shape, generator=g), torch.randn(batch, 3, cfg.search_size, cfg.search_size, generator=g)


def rates(model) -> list[float]:
    return [b.drop_path1.drop_prob for b in model.backbone.blocks]


def test_rates_rise_linearly_over_the_blocks_there_are() -> None:
    model = build_model("mixformerv2-12l-tiny", drop_path_rate=0.1)
    assert rates(model) == pytest.approx([0.1 * i / 11 for i in range(12)])
    assert [b.drop_path2.drop_prob for b in model.backbone.blocks] == rates(model)
    assert model.config.drop_path_rate == pytest.approx(0.1)
    ProgressiveDepthPruner(model, [0, 3, 6, 9], blocks="backbone.blocks").finalize()
    model.backbone.set_drop_path(0.2)  # what the recipe runner does at the start of every trained stage
    assert rates(model) == pytest.approx([0.2 * i / 7 for i in range(8)]) and model.config.drop_path_rate == pytest.approx(0.2)
    assert rates(build_model("mixformerv2-s-tiny")) == [0.0] * 4  # default: off


def test_active_in_training_identity_in_eval() -> None:
    torch.manual_seed(0)
    plain = build_model("mixformerv2-b-tiny").eval()
    model = build_model("mixformerv2-b-tiny", drop_path_rate=0.5)
    model.load_state_dict(plain.state_dict())
    x = inputs(model)
    with torch.no_grad():
        reference = plain(*x)["boxes"]
        assert torch.equal(model.eval()(*x)["boxes"], reference)
        model.train()
        torch.manual_seed(1)
        first = model(*x)["boxes"]
        torch.manual_seed(2)
        second = model(*x)["boxes"]
        torch.manual_seed(1)
        again = model(*x)["boxes"]
    assert not torch.allclose(first, reference) and not torch.allclose(first, second) and torch.equal(first, again)
    plain.train()
    with torch.no_grad():
        assert torch.equal(plain(*x)["boxes"], reference)  # rate 0: nothing happens in training either


def test_a_dropped_branch_leaves_its_sample_unchanged_and_kept_ones_are_rescaled() -> None:
    block = build_model("mixformerv2-s-tiny", drop_path_rate=0.5).backbone.blocks[-1].train()
    x = torch.randn(64, 3, 5)
    torch.manual_seed(0)
    out = block.drop_path1(x)
    dropped = (out == 0).flatten(1).all(1)
    kept = torch.isclose(out, 2 * x).flatten(1).all(1)
    assert (dropped | kept).all() and 15 < int(dropped.sum()) < 49


def test_cached_forward_equals_full_forward_with_drop_path() -> None:
    torch.manual_seed(0)
    model = build_model("mixformerv2-b-tiny", drop_path_rate=0.1).eval()
    x = inputs(model)
    with torch.no_grad():
        full = model(*x)
        model.set_templates(x[0], x[1])
        fast = model.forward_search(x[2])
    assert torch.allclose(fast["boxes"], full["boxes"], atol=1e-5, rtol=0)
    assert torch.allclose(fast["score"], full["score"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("training", [False, True])
def test_pmdp_branch_hooks_sit_on_the_drop_paths_and_stay_exact(training: bool) -> None:
    """The branch ends at drop_path1/2 (timm's layout): at γ = 0 a fading block is exactly the identity, in
    eval and in training with drop path (where dropping or rescaling its branch must not leak through)."""
    torch.manual_seed(0)
    model = build_model("mixformerv2-12l-tiny", drop_path_rate=0.3)
    pruner = ProgressiveDepthPruner(model, [3, 9], blocks="backbone.blocks", schedule=LinearSchedule(m=2))
    block = model.backbone.blocks[9]
    assert block.drop_path1._forward_hooks and block.drop_path2._forward_hooks and not block.attn._forward_hooks
    model.train(training)
    x = torch.randn(4, model.backbone.num_template_tokens + 64 + 4, model.config.embed_dim)
    nt = model.backbone.num_template_tokens
    with torch.no_grad():
        pruner.set_epoch(1)  # γ = 0.5: the branches are halved, dropped or not
        torch.manual_seed(5)
        half = block(x, nt)
        pruner.remove()
        torch.manual_seed(5)
        whole = block(x, nt)
        torch.manual_seed(5)
        attn = block.drop_path1(block.attn(block.norm1(x), nt))
        mid = x + 0.5 * attn
        torch.manual_seed(5)
        block.drop_path1(torch.empty_like(x))  # same draws as above, then the MLP branch's
        expected = mid + 0.5 * block.drop_path2(block.mlp(block.norm2(mid)))
    assert torch.allclose(half, expected, atol=1e-6) and not torch.allclose(half, whole)
    pruner = ProgressiveDepthPruner(model, [3, 9], blocks="backbone.blocks", schedule=LinearSchedule(m=2))
    pruner.set_epoch(2)
    with torch.no_grad():
        assert torch.equal(block(x, nt), x)


def test_io_round_trips_drop_path_and_reads_folders_saved_before_it(tmp_path) -> None:
    model = build_model("mixformerv2-12l-tiny", drop_path_rate=0.1)
    ProgressiveDepthPruner(model, [0, 3, 6, 9], blocks="backbone.blocks").finalize()  # kept blocks keep their rates
    kept = rates(model)
    dio.save(model, tmp_path / "m")
    back = dio.load(tmp_path / "m")
    assert rates(back) == kept and back.config.drop_path_rate == pytest.approx(0.1)
    plain = build_model("mixformerv2-s-tiny")
    dio.save(plain, tmp_path / "old")
    arch = tmp_path / "old" / "arch.json"
    spec = json.loads(arch.read_text())
    del spec["config"]["drop_path_rate"]  # as distilkit wrote it before the field existed
    arch.write_text(json.dumps(spec))
    with pytest.warns(UserWarning, match="arch.json"):
        old = dio.load(tmp_path / "old")
    assert old.config.drop_path_rate == 0.0 and rates(old) == [0.0] * 4


@pytest.mark.parametrize("rate, message", [(1.0, r"drop_path_rate must be in \[0, 1\), got 1"),
                                           (-0.1, "drop_path_rate must be >= 0"), ("0.1", "drop_path_rate")])
def test_bad_rates_are_one_line_errors(rate, message) -> None:
    with pytest.raises(DistilkitError, match=message):
        build_model("mixformerv2-s-tiny", drop_path_rate=rate)
    with pytest.raises(DistilkitError, match=message):
        build_model("mixformerv2-s-tiny").backbone.set_drop_path(rate)
