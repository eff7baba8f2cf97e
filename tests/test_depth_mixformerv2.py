"""PMDP on the flagship model: exact at γ = 1 and γ = 0, on both the full and the template-cached path."""

from __future__ import annotations

import pytest
import torch

from distilkit.depth import LinearSchedule, ProgressiveDepthPruner
from distilkit.trackers.mixformerv2 import build_model

pytestmark = pytest.mark.isa_sensitive  # float results: rerun under .ci/avx2.env

REMOVE = [0, 3, 6, 9]


def inputs(model) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    cfg = model.config
    g = torch.Generator().manual_seed(1)
    t = torch.randn(2, 3, cfg.template_size, cfg.template_size, generator=g)
    return t, torch.randn(t.shape, generator=g), torch.randn(2, 3, cfg.search_size, cfg.search_size, generator=g)


@pytest.mark.parametrize("mode", ["branch", "block"])
def test_pmdp_on_mixformerv2_is_exact_at_both_ends(mode: str) -> None:
    torch.manual_seed(0)
    model = build_model("mixformerv2-12l-tiny").eval()
    x = inputs(model)
    with torch.no_grad():
        reference = model(*x)["boxes"]
        pruner = ProgressiveDepthPruner(model, REMOVE, blocks="backbone.blocks", schedule=LinearSchedule(m=2), mode=mode)
        assert torch.equal(model(*x)["boxes"], reference)
        pruner.set_epoch(1)  # γ = 0.5: the pruner's hooks act identically on the cached path
        half = model(*x)["boxes"]
        assert not torch.allclose(half, reference)
        model.set_templates(x[0], x[1])
        assert (model.forward_search(x[2])["boxes"] - half).abs().max() <= 1e-5
        pruner.set_epoch(2)
        faded = model(*x)["boxes"]
        model.set_templates(x[0], x[1])
        faded_cached = model.forward_search(x[2])["boxes"]
        assert (faded_cached - faded).abs().max() <= 1e-5
        pruner.finalize()
        model.set_templates(x[0], x[1])
        assert (model(*x)["boxes"] - faded).abs().max() <= 1e-6
        assert (model.forward_search(x[2])["boxes"] - faded).abs().max() <= 1e-5


def test_finalized_mixformerv2_matches_a_fresh_8_layer_model() -> None:
    torch.manual_seed(0)
    model = build_model("mixformerv2-12l-tiny").eval()
    ProgressiveDepthPruner(model, REMOVE, blocks="backbone.blocks").finalize()
    fresh = build_model("mixformerv2-12l-tiny", depth=8).eval()
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in fresh.parameters())
    fresh.load_state_dict(model.state_dict(), strict=True)
    x = inputs(model)
    with torch.no_grad():
        assert torch.equal(fresh(*x)["boxes"], model(*x)["boxes"])
    assert model.config.depth == 8
