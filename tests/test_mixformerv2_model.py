"""MixFormerV2 model family: exact sizes, forward contract, template cache, live arch spec."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from distilkit.errors import DistilkitError
from distilkit.kernels import load_native, native_status, use_native
from distilkit.trackers.mixformerv2 import (
    PRESETS,
    MixFormerV2Config,
    build_model,
    build_model_from_config,
)

pytestmark = pytest.mark.isa_sensitive  # float results: rerun under .ci/avx2.env

TINY = [name for name in PRESETS if name.endswith("-tiny")]



def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name, expected",
    [
        ("mixvit-b", 98_403_894),
        ("mixformerv2-12l", 86_596_824),
        ("mixformerv2-b", 58_855_201),
        ("mixformerv2-s", 16_228_897),
    ],
)
def test_exact_parameter_counts(name: str, expected: int) -> None:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = build_model(name)
    assert count(model) == expected


def inputs(cfg: MixFormerV2Config, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    t, s, n = cfg.template_size, cfg.search_size, cfg.num_online_templates
    online = torch.randn(batch, n, 3, t, t, generator=g) if n > 1 else torch.randn(batch, 3, t, t, generator=g)
    return torch.randn(batch, 3, t, t, generator=g), online, torch.randn(batch, 3, s, s, generator=g)


def randomise_norm_stats(model: nn.Module) -> None:
    """Non-trivial BatchNorm statistics so eval-mode corner heads are not identity-like."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.mark.parametrize("name", TINY)
def test_output_contract(name: str) -> None:
    model = build_model(name).eval()
    cfg = model.config
    with torch.no_grad():
        out = model(*inputs(cfg), return_features=True)
    assert out["boxes"].shape == (2, 4)
    assert len(out["features"]) == cfg.depth
    n_tokens = cfg.template_tokens * (1 + cfg.num_online_templates) + cfg.search_feat_size**2 + cfg.num_pred_tokens
    assert out["features"][0].shape == (2, n_tokens, cfg.embed_dim)
    if cfg.head == "t4":
        assert out["side_logits"].shape == (2, 4, cfg.bins)
        assert "corner_logits" not in out
    else:
        side = cfg.search_feat_size * (4 if cfg.head == "py_corner" else 1)
        assert out["corner_logits"].shape == (2, 2, side * side)
    assert ("score" in out) == cfg.score_head
    if cfg.score_head:
        assert out["score"].shape == (2,)
    assert torch.all((out["boxes"] >= 0) & (out["boxes"] <= 1))


@pytest.fixture(params=["sdpa", "native"])
def attention_kernel(request):
    """Run a test with the cached path's attention by SDPA and by distilkit's native kernel."""
    if request.param == "native" and not load_native():
        pytest.skip(f"native kernels {native_status()}")
    with use_native(request.param == "native"):
        yield request.param


@pytest.mark.parametrize(
    "name, overrides",
    [(n, {}) for n in TINY]
    + [("mixformerv2-b-tiny", {"num_online_templates": 2}), ("mixvit-b-tiny", {"num_online_templates": 2}),
       ("mixformerv2-s-tiny", {"score_variant": "paper"})],
)
def test_cached_path_equals_full_forward(name: str, overrides: dict, attention_kernel) -> None:
    torch.manual_seed(0)
    model = build_model(name, **overrides).eval()
    randomise_norm_stats(model)
    template, online, search = inputs(model.config)
    with torch.no_grad():
        full = model(template, online, search, return_features=True)
        model.set_templates(template, online)
        fast = model.forward_search(search)
        with_feats = model.forward_search(search, return_features=True)
    for key in ("boxes", "side_logits", "corner_logits", "score"):
        if key in full:
            assert torch.allclose(fast[key], full[key], atol=1e-5, rtol=0), key
            assert torch.allclose(with_feats[key], full[key], atol=1e-5, rtol=0), key
    for a, b in zip(with_feats["features"], full["features"]):
        assert torch.allclose(a, b, atol=1e-5, rtol=0)

    # The cache really carries the templates: other templates give other outputs, and updating the
    # online template alone matches a full forward with the new online template.
    new_online = torch.randn_like(online)
    with torch.no_grad():
        model.update_online_template(new_online)
        updated = model.forward_search(search)
        expected = model(template, new_online, search)
    assert torch.allclose(updated["boxes"], expected["boxes"], atol=1e-5, rtol=0)
    key = "side_logits" if "side_logits" in full else "corner_logits"
    assert not torch.allclose(updated[key], full[key], atol=1e-4)
    model.clear_templates()
    with pytest.raises(DistilkitError, match="set_templates"):
        model.forward_search(search)


def test_cached_batch_one_template_is_shared(attention_kernel) -> None:
    model = build_model("mixformerv2-b-tiny").eval()
    template, online, search = inputs(model.config, batch=3)
    with torch.no_grad():
        model.set_templates(template[:1], online[:1])
        fast = model.forward_search(search)
        full = model(template[:1].expand(3, -1, -1, -1), online[:1].expand(3, -1, -1, -1), search)
    assert torch.allclose(fast["side_logits"], full["side_logits"], atol=1e-5, rtol=0)


def test_hooks_fire_on_both_paths() -> None:
    """Pruners and profilers hook block/attn/mlp forwards: the cached path must call them too."""
    model = build_model("mixformerv2-s-tiny").eval()
    calls: list[str] = []
    for i, blk in enumerate(model.backbone.blocks):
        for name, mod in (("block", blk), ("attn", blk.attn), ("mlp", blk.mlp)):
            mod.register_forward_hook(lambda *_, tag=f"{name}{i}": calls.append(tag))
    template, online, search = inputs(model.config)
    with torch.no_grad():
        model(template, online, search)
        full_calls, calls[:] = list(calls), []
        model.set_templates(template, online)
        model.forward_search(search)
    expected = sorted(f"{n}{i}" for i in range(4) for n in ("block", "attn", "mlp"))
    assert sorted(full_calls) == expected
    assert sorted(calls) == sorted(expected * 2)  # template encoding + search pass


def test_branch_scaling_hook_changes_cached_and_full_alike() -> None:
    """A depth pruner scales residual branches via hooks on attn/mlp outputs; both paths must agree."""
    model = build_model("mixformerv2-12l-tiny").eval()
    for blk in model.backbone.blocks[::3]:
        for mod in (blk.attn, blk.mlp):
            mod.register_forward_hook(lambda _m, _i, out: out * 0.3)
    template, online, search = inputs(model.config)
    with torch.no_grad():
        full = model(template, online, search)
        model.set_templates(template, online)
        fast = model.forward_search(search)
    assert torch.allclose(full["side_logits"], fast["side_logits"], atol=1e-5, rtol=0)


def test_arch_spec_follows_pruned_shapes() -> None:
    model = build_model("mixformerv2-b-tiny")
    # Depth pruning: drop two blocks. Width pruning: slice fc1 outputs / fc2 inputs of one block.
    del model.backbone.blocks[5]
    del model.backbone.blocks[0]
    mlp = model.backbone.blocks[1].mlp
    keep = torch.arange(0, mlp.fc1.out_features, 4)
    fc1, fc2 = nn.Linear(64, len(keep)), nn.Linear(len(keep), 64)
    with torch.no_grad():
        fc1.weight.copy_(mlp.fc1.weight[keep]), fc1.bias.copy_(mlp.fc1.bias[keep])
        fc2.weight.copy_(mlp.fc2.weight[:, keep]), fc2.bias.copy_(mlp.fc2.bias)
    mlp.fc1, mlp.fc2 = fc1, fc2
    spec = json.loads(json.dumps(model.arch_spec()))
    assert spec["factory"] == "distilkit.trackers.mixformerv2:build_model_from_config"
    assert spec["config"]["depth"] == 6
    assert spec["config"]["mlp_hidden"] == [256, 64, 256, 256, 256, 256]
    assert model.config.depth == 6 and model.config.block_mlp_hidden[1] == 64
    module_path, fn = spec["factory"].split(":")
    rebuilt = getattr(__import__(module_path, fromlist=[fn]), fn)(spec["config"])
    rebuilt.load_state_dict(model.state_dict())
    model.eval(), rebuilt.eval()
    x = inputs(model.config)
    with torch.no_grad():
        assert torch.equal(model(*x)["boxes"], rebuilt(*x)["boxes"])


def test_config_round_trip_and_overrides() -> None:
    cfg = build_model("mixformerv2-s-tiny", depth=2).config
    assert cfg.block_mlp_hidden == [64, 64]
    again = MixFormerV2Config.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert count(build_model_from_config(cfg)) == count(build_model_from_config(again.to_dict()))


def test_bad_inputs_raise_distilkit_error() -> None:
    with pytest.raises(DistilkitError, match="valid names: .*mixformerv2-s"):
        build_model("mixformerv2-xl")
    with pytest.raises(DistilkitError, match="unknown override"):
        build_model("mixformerv2-s-tiny", dpeth=3)
    with pytest.raises(DistilkitError, match="unknown MixFormerV2 config keys: colour"):
        MixFormerV2Config.from_dict({"colour": 1})
    with pytest.raises(DistilkitError, match="score head"):
        build_model("mixvit-b-tiny", score_head=True)
    model = build_model("mixformerv2-s-tiny").eval()
    template, online, search = inputs(model.config)
    with pytest.raises(DistilkitError, match=r"search: expected shape \(B, 3, 64, 64\), got \(2, 3, 72, 72\)"):
        model(template, online, torch.zeros(2, 3, 72, 72))
    with pytest.raises(DistilkitError, match=r"template: expected shape \(B, 3, 32, 32\)"):
        model(torch.zeros(2, 3, 40, 40), online, search)
    with pytest.raises(DistilkitError, match="online_template"):
        model(template, torch.zeros(2, 2, 3, 32, 32), search)
    model.set_templates(template, online)
    with pytest.raises(DistilkitError, match="search"):
        model.forward_search(torch.zeros(1, 3, 32, 32))


@pytest.mark.parametrize("overrides, message", [
    (dict(bins=0), "bins must be >= 1, got 0"),
    (dict(num_heads=0), "num_heads must be >= 1"),
    (dict(patch_size=0), "patch_size must be >= 1"),
    (dict(search_factor=-1), "search_factor must be > 0"),
    (dict(norm_eps=-1e-6), "norm_eps must be > 0"),
    (dict(mlp_hidden=[0, 8, 8, 8]), "mlp_hidden entry must be >= 1, got 0"),
    (dict(mlp_hidden=[8.5, 8, 8, 8]), "mlp_hidden entry must be an int, got 8.5"),
    (dict(mlp_ratio=0.001), "leaves no MLP hidden channel"),
    (dict(depth="4"), "depth must be an int, got '4'"),
    (dict(embed_dim=66, num_heads=3), "embed_dim must be a multiple of 4"),
    (dict(score_head="yes"), "score_head must be true or false"),
])
def test_bad_config_values_fail_when_the_model_is_built(overrides, message) -> None:
    with pytest.raises(DistilkitError, match=message):
        build_model("mixformerv2-s-tiny", **overrides)


def test_corner_channel_and_name_overrides() -> None:
    with pytest.raises(DistilkitError, match="corner_channel must be a multiple of 8"):
        build_model("mixvit-b-tiny", corner_channel=4)
    assert build_model("mixformerv2-s-tiny", name="mine").config.name == "mine"  # `name` is a field too


def test_template_cache_follows_weight_changes() -> None:
    """An optimizer step or a pruned block after set_templates must not leave stale template keys."""
    from distilkit.depth import ProgressiveDepthPruner

    torch.manual_seed(0)
    model = build_model("mixformerv2-s-tiny").eval()
    template, online, search = inputs(model.config)
    with torch.no_grad():
        model.set_templates(template, online)
        before = model.forward_search(search)["side_logits"]
        model.backbone.blocks[0].attn.qkv.weight.mul_(3.0)  # what an optimizer step does
        after = model.forward_search(search)["side_logits"]
        assert not torch.allclose(after, before, atol=1e-4)
        assert torch.allclose(after, model(template, online, search)["side_logits"], atol=1e-5, rtol=0)
        ProgressiveDepthPruner(model, remove=[1], blocks="backbone.blocks").finalize()
        pruned = model.forward_search(search)["side_logits"]
        assert torch.allclose(pruned, model(template, online, search)["side_logits"], atol=1e-5, rtol=0)


def test_copies_leave_the_template_cache_behind() -> None:
    """A cache recorded with autograd on holds graph tensors (deepcopy refuses those) and watches the
    original's weights; copies start without one."""
    model = build_model("mixformerv2-s-tiny")
    cfg = model.config
    template = torch.randn(1, 3, cfg.template_size, cfg.template_size)
    search = torch.randn(1, 3, cfg.search_size, cfg.search_size)
    model.set_templates(template, template)  # autograd on: trainable through the cache
    twin = copy.deepcopy(model)
    with pytest.raises(DistilkitError, match="set_templates"):
        twin.forward_search(search)
    twin.set_templates(template, template)
    with torch.no_grad():
        assert torch.allclose(twin.forward_search(search)["boxes"], model.forward_search(search)["boxes"], atol=1e-6)
    assert model.forward_search(search)["boxes"].requires_grad  # the original keeps its cache


def test_several_template_caches_on_one_model() -> None:
    model = build_model("mixformerv2-s-tiny", score_head=True).eval()
    cfg = model.config
    g = torch.Generator().manual_seed(0)
    t1, t2 = (torch.randn(1, 3, cfg.template_size, cfg.template_size, generator=g) for _ in range(2))
    search = torch.randn(1, 3, cfg.search_size, cfg.search_size, generator=g)
    with torch.no_grad():
        first = model.set_templates(t1, t1)
        second = model.set_templates(t2, t2)  # now the default
        for cache, t in ((first, t1), (second, t2)):
            assert torch.allclose(model.forward_search(search, templates=cache)["boxes"], model(t, t, search)["boxes"], atol=1e-5)
        assert torch.allclose(model.forward_search(search)["boxes"], model(t2, t2, search)["boxes"], atol=1e-5)
        assert model.update_online_template(t2, templates=first) is first  # in place: holders see it
        assert torch.allclose(model.forward_search(search, templates=first)["boxes"], model(t1, t2, search)["boxes"], atol=1e-5)
        other = build_model("mixformerv2-s-tiny", score_head=True).eval()
        with pytest.raises(DistilkitError, match="cached by another model instance"):
            other.forward_search(search, templates=first)
