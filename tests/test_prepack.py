"""distilkit.prepack: prepacked oneDNN linears give F.linear's outputs and never go stale or break training."""

import copy

import pytest
import torch
from torch import nn

from distilkit import io
from distilkit.prepack import PrepackedLinear, prepack_available, prepack_linears, prepacked_view, unpack_linears
from distilkit.profile import profile
from distilkit.trackers.mixformerv2 import MixFormerV2Tracker, build_model

pytestmark = [pytest.mark.isa_sensitive, pytest.mark.skipif(not prepack_available(),
                                                            reason="torch build without oneDNN linear kernels")]


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 32), nn.GELU(), nn.Linear(32, 5, bias=False))


def test_outputs_match_plain_linear_for_any_leading_shape():
    model, x = _mlp(), torch.randn(2, 7, 3, 12)
    with torch.no_grad():
        ref = model(x)
        assert prepack_linears(model, batch_hint=16) == 2
        assert all(isinstance(m, PrepackedLinear) for m in (model[0], model[2]))
        out = model(x)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-5)
    assert model[0]._packed is not None, "inference call did not take the prepacked kernel"


def test_weights_changed_in_place_are_repacked():
    model, x = _mlp(), torch.randn(4, 12)
    prepack_linears(model)
    with torch.no_grad():
        model(x)
        model[0].weight.mul_(-2.0)
        model[2].load_state_dict({"weight": torch.randn(5, 32)})
        out = model(x)
    plain = _mlp()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.allclose(out, plain(x), atol=1e-5)


def test_training_uses_autograd_and_matches_plain_gradients():
    model, plain, x = _mlp(), _mlp(), torch.randn(6, 12)
    prepack_linears(model)
    model(x).square().sum().backward()
    plain(x).square().sum().backward()
    for a, b in zip(model.parameters(), plain.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5)
    assert model[0]._packed is None, "a recorded forward must not use the opaque kernel"


def test_state_dict_copies_and_unpack_keep_the_plain_module():
    model = _mlp()
    keys = list(model.state_dict())
    prepack_linears(model)
    with torch.no_grad():
        model(torch.randn(3, 12))
    assert list(model.state_dict()) == keys
    clone = copy.deepcopy(model)
    assert clone[0]._packed is None and isinstance(clone[0], PrepackedLinear)
    assert unpack_linears(model) == 2
    assert type(model[0]) is nn.Linear and not hasattr(model[0], "_packed")


def test_flops_counter_still_sees_the_linears():
    model = build_model("mixformerv2-s-tiny").eval()
    t, s = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 64, 64)
    before = profile(model, (t, t, s)).macs
    prepack_linears(model)
    assert profile(model, (t, t, s)).macs == before


def test_mixformerv2_cached_and_full_paths_unchanged():
    torch.manual_seed(0)
    model = build_model("mixformerv2-s-tiny").eval()
    t, s = torch.randn(1, 3, 32, 32), torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        ref = model(t.expand(2, -1, -1, -1), t.expand(2, -1, -1, -1), s)
        prepack_linears(model, batch_hint=68)
        model.set_templates(t, t)
        cached = model.forward_search(s)
        full = model(t.expand(2, -1, -1, -1), t.expand(2, -1, -1, -1), s)
    for out in (cached, full):
        assert torch.allclose(out["boxes"], ref["boxes"], atol=1e-5)
        assert torch.allclose(out["side_logits"], ref["side_logits"], atol=1e-4)


def test_prepacked_view_shares_weights_and_leaves_the_model_alone():
    model, x = _mlp(), torch.randn(4, 12)
    view = prepacked_view(model)
    assert type(model[0]) is nn.Linear and isinstance(view[0], PrepackedLinear)
    assert view[0].weight is model[0].weight
    with torch.no_grad():
        model[0].weight.add_(1.0)  # e.g. an optimizer step on the original
        assert torch.allclose(view(x), model(x), atol=1e-5)


def test_prepacked_models_save_and_load_as_plain_ones(tmp_path):
    model = build_model("mixformerv2-s-tiny").eval()
    prepack_linears(model)
    loaded = io.load(io.save(model, tmp_path / "m"))
    assert not any(isinstance(m, PrepackedLinear) for m in loaded.modules())
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)


def test_tracker_prepacks_a_view_by_default_and_can_opt_out():
    model = build_model("mixformerv2-s-tiny")
    fast = MixFormerV2Tracker(model)
    assert any(isinstance(m, PrepackedLinear) for m in fast.model.modules())
    assert not any(isinstance(m, PrepackedLinear) for m in model.modules())  # the caller's model is untouched
    plain = MixFormerV2Tracker(build_model("mixformerv2-s-tiny"), prepack=False)
    assert not any(isinstance(m, PrepackedLinear) for m in plain.model.modules())
