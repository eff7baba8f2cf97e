"""ProgressiveDepthPruner: exact at γ = 1 and γ = 0, paper schedule, resume, finalize, errors."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import timm
import torch
from torch import nn

from distilkit.depth import (
    CosineSchedule,
    LinearSchedule,
    ProgressiveDepthPruner,
    StepSchedule,
    remove_layers,
    schedule_from_dict,
    schedule_to_dict,
)
from distilkit.errors import DistilkitError

pytestmark = pytest.mark.isa_sensitive  # float results: rerun under .ci/avx2.env

REMOVE = [0, 3, 6, 9]


def tiny_vit(depth: int = 12, **kw) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, num_classes=10, depth=depth, **kw
    ).eval()


class Mixer(nn.Module):
    """Attention stand-in that takes an extra argument, like MixFormerV2's asymmetric attention."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, t_len: int) -> torch.Tensor:
        ctx = x[:, :t_len].mean(dim=1, keepdim=True)
        return self.proj(x + ctx)


class PlainBlock(nn.Module):
    """`x = x + attn(norm1(x), t); x = x + mlp(norm2(x))`, no timm parts."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Mixer(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor, t_len: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), t_len)
        return x + self.mlp(self.norm2(x))


class Tracker(nn.Module):
    def __init__(self, depth: int = 12, dim: int = 16) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.backbone = nn.Module()
        self.backbone.blocks = nn.ModuleList(PlainBlock(dim) for _ in range(depth))
        self.head = nn.Linear(dim, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.backbone.blocks:
            x = block(x, 3)
        return self.head(x[:, -1])


def models():
    return [
        (tiny_vit(), "blocks", torch.randn(2, 3, 32, 32)),
        (tiny_vit(init_values=0.5, drop_path_rate=0.1), "blocks", torch.randn(2, 3, 32, 32)),
        (Tracker().eval(), "backbone.blocks", torch.randn(2, 9, 16)),
    ]


@pytest.mark.parametrize("mode", ["branch", "block"])
def test_gamma_one_is_identity_and_gamma_zero_is_finalized(mode: str) -> None:
    for model, path, x in models():
        reference = model(x)
        pruner = ProgressiveDepthPruner(model, REMOVE, blocks=path, schedule=LinearSchedule(m=4), mode=mode)
        assert pruner.gamma == 1.0
        assert torch.equal(model(x), reference)
        pruner.set_epoch(2)
        assert pruner.gamma == 0.5 and not torch.allclose(model(x), reference)
        pruner.set_epoch(4)
        faded = model(x)
        layer_map = pruner.finalize()
        assert layer_map.new_depth == 8
        assert len(model.get_submodule(path)) == 8
        assert (model(x) - faded).abs().max() <= 1e-6


def test_branch_mode_scales_each_branch_exactly() -> None:
    model, x = tiny_vit(init_values=0.5), torch.randn(2, 3, 32, 32)
    tokens = model.norm_pre(model._pos_embed(model.patch_embed(x)))
    pruner = ProgressiveDepthPruner(model, [0], schedule=LinearSchedule(m=10))
    pruner.set_progress(3.5)
    gamma, block = pruner.gamma, model.blocks[0]
    with torch.no_grad():
        h = tokens + gamma * block.ls1(block.attn(block.norm1(tokens)))
        expected = h + gamma * block.ls2(block.mlp(block.norm2(h)))
        torch.testing.assert_close(block(tokens), expected, rtol=0, atol=1e-6)
        pruner.remove()  # hooks gone: the plain block again
        h = tokens + block.ls1(block.attn(block.norm1(tokens)))
        assert torch.equal(block(tokens), h + block.ls2(block.mlp(block.norm2(h))))


def test_block_mode_is_lerp() -> None:
    model, x = Tracker().eval(), torch.randn(2, 9, 16)
    pruner = ProgressiveDepthPruner(model, [5], blocks="backbone.blocks", mode="block", schedule=LinearSchedule(m=4))
    pruner.set_progress(1.0)
    block = model.backbone.blocks[5]
    with torch.no_grad():
        pruner.remove()
        full = block(x, 3)
        pruner._handles = pruner._attach(model.backbone.blocks)
        torch.testing.assert_close(block(x, 3), x + 0.75 * (full - x))


def test_finalized_model_matches_fresh_smaller_model() -> None:
    model = tiny_vit()
    pruner = ProgressiveDepthPruner(model, REMOVE)
    pruner.finalize()
    fresh = tiny_vit(depth=8)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in fresh.parameters())
    fresh.load_state_dict(model.state_dict(), strict=True)
    assert [f["module"] for f in model.feature_info] == [f"blocks.{i}" for i in range(8)]
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(fresh(x), model(x))


def test_official_cosine_schedule_matches_paper_formula() -> None:
    m = 40
    pruner = ProgressiveDepthPruner(tiny_vit(depth=4), [1], schedule=CosineSchedule.official(m))
    for k in range(m + 3):  # 0-based epoch k is the official trainer's epoch e = k + 1
        e = k + 1
        expected = 0.5 * (1 + math.cos(math.pi * min(e + 1, m) / m))
        assert pruner.set_epoch(k) == pytest.approx(expected, abs=1e-12)
    assert pruner.set_epoch(0) < 1.0
    assert pruner.set_epoch(m - 3) > 0.0  # official epoch m − 2
    assert pruner.set_epoch(m - 2) == pytest.approx(0.0, abs=1e-15)  # official epoch m − 1
    plain = CosineSchedule(m=m)
    assert plain(0) == 1.0 and plain(m / 2) == pytest.approx(0.5) and plain(m) == 0.0


def test_resume_continues_the_same_gamma_sequence() -> None:
    def run(pruner: ProgressiveDepthPruner, n: int) -> list[float]:
        return [pruner.step() for _ in range(n)]

    make = lambda: ProgressiveDepthPruner(  # noqa: E731
        tiny_vit(depth=4), [1, 2], schedule=CosineSchedule(m=2), unit="iteration", iters_per_epoch=5
    )
    straight = make()
    full = run(straight, 12)
    first = make()
    head = run(first, 7)
    state = first.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    assert resumed.gamma == first.gamma
    assert head + run(resumed, 5) == full
    assert full[-1] == 0.0 and 0 < full[3] < 1
    other = ProgressiveDepthPruner(tiny_vit(depth=4), [1, 2], schedule=CosineSchedule(m=3))
    with pytest.raises(DistilkitError, match="schedule"):
        other.load_state_dict({**state, "unit": "epoch", "iters_per_epoch": None})


def test_ddp_wrapped_model_gets_hooks_on_the_inner_module(tmp_path) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        model, x = tiny_vit(depth=4), torch.randn(2, 3, 32, 32)
        wrapped = nn.parallel.DistributedDataParallel(model)
        pruner = ProgressiveDepthPruner(wrapped, [1], schedule=LinearSchedule(m=1))
        pruner.set_epoch(1)
        faded = wrapped(x)
        pruner.finalize()
        assert len(model.blocks) == 3
        assert (model(x) - faded).abs().max() <= 1e-6
    finally:
        dist.destroy_process_group()


def test_bad_inputs_raise_one_clear_error() -> None:
    model = tiny_vit(depth=4)
    with pytest.raises(DistilkitError, match="no attribute 'backbone'"):
        ProgressiveDepthPruner(model, [0], blocks="backbone.blocks")
    with pytest.raises(DistilkitError, match="not an nn.Sequential or nn.ModuleList"):
        ProgressiveDepthPruner(model, [0], blocks="head")
    with pytest.raises(DistilkitError, match="out of range"):
        ProgressiveDepthPruner(model, [4])
    with pytest.raises(DistilkitError, match="cannot remove all 4 blocks"):
        ProgressiveDepthPruner(model, [0, 1, 2, 3])
    with pytest.raises(DistilkitError, match="unknown PMDP mode"):
        ProgressiveDepthPruner(model, [0], mode="layer")
    seq = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    holder = nn.Module()
    holder.blocks = seq
    with pytest.raises(DistilkitError, match="has no attn/mlp submodule"):
        ProgressiveDepthPruner(holder, [0], mode="branch")
    ProgressiveDepthPruner(holder, [0], mode="block")  # any block works in block mode
    pruner = ProgressiveDepthPruner(model, [0])
    pruner.finalize()
    with pytest.raises(DistilkitError, match="finalized"):
        pruner.set_epoch(1)


def test_remove_layers_keeps_sequential_type_and_names() -> None:
    holder = nn.Module()
    holder.layers = nn.Sequential(*[nn.Linear(2, 2) for _ in range(4)])
    original = holder.layers
    remove_layers(holder, [1, 2], blocks="layers")
    assert holder.layers is original and type(original) is nn.Sequential
    assert list(original._modules) == ["0", "1"]
    named = nn.Module()
    named.layers = nn.Sequential(OrderedDict(a=nn.Linear(2, 2), b=nn.Linear(2, 2), c=nn.Linear(2, 2)))
    remove_layers(named, [1], blocks="layers")
    assert list(named.layers._modules) == ["a", "c"]


class Recorded(nn.Module):
    """Blocks plus ints that look like depth records: only those named in depth_attrs may change."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(2, 2) for _ in range(4))
        self.depth, self.num_layers, self.n_layers = 4, 4, 6  # num_layers: of a decoder that is not pruned here
        self.config = type("Config", (), {"num_hidden_layers": 4})()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def test_depth_records_change_only_where_named() -> None:
    model = Recorded()
    remove_layers(model, [1], depth_attrs=("depth", "config.num_hidden_layers"))
    assert (len(model.blocks), model.depth, model.config.num_hidden_layers, model.num_layers) == (3, 3, 3, 4)
    remove_layers(model, [0])  # nothing named: nothing guessed
    assert (len(model.blocks), model.depth, model.num_layers) == (2, 3, 4)
    for attrs, match in ((["dept"], "Recorded.dept is not an int attribute"), ("n_layers", "n_layers is 6, not the depth 4"),
                         ([3], "dotted attribute paths")):
        model = Recorded()
        pruner = ProgressiveDepthPruner(model, [1], mode="block")
        with pytest.raises(DistilkitError, match=match):
            pruner.finalize(depth_attrs=attrs)
        assert len(model.blocks) == 4 and pruner._handles  # nothing changed: the pruner still runs
    pruner.finalize(depth_attrs="num_layers")
    assert (len(model.blocks), model.num_layers, model.depth) == (3, 3, 4)


def test_schedules_round_trip_and_reject_bad_parameters() -> None:
    for schedule in (CosineSchedule.official(30), LinearSchedule(m=5, offset=1), StepSchedule(m=4, steps=2)):
        assert schedule_from_dict(schedule_to_dict(schedule)) == schedule
    assert [StepSchedule(m=4, steps=2)(t) for t in (0, 1.9, 2, 4)] == [1.0, 1.0, 0.5, 0.0]
    assert CosineSchedule(m=0)(0) == 0.0  # m = 0: the skip initialisation
    for bad in ({"kind": "cosine", "m": -1}, {"kind": "linear", "m": "40"}, {"kind": "cosine", "q": 1}):
        with pytest.raises(DistilkitError):
            schedule_from_dict(bad)


@pytest.mark.parametrize("mode", ["branch", "block"])
def test_faded_blocks_stay_in_the_graph_for_ddp(mode: str) -> None:
    model = Tracker(depth=3).train()
    pruner = ProgressiveDepthPruner(model, [1], blocks="backbone.blocks", mode=mode, schedule=LinearSchedule(m=1))
    pruner.set_epoch(5)
    model(torch.randn(2, 5, 16)).sum().backward()
    grads = [p.grad for p in model.backbone.blocks[1].parameters()]
    assert all(g is not None and not g.any() for g in grads)  # zero, not missing


@pytest.mark.parametrize("mode", ["branch", "block"])
def test_freeze_removed_blocks_get_no_gradient_and_do_not_move(mode):
    """The official PMDP: fading blocks are frozen, so AdamW (weight decay included) leaves them as they were."""
    model = tiny_vit(depth=6).train()
    model.blocks[4].norm1.weight.requires_grad_(False)  # frozen by the user: must stay frozen after remove()
    pruner = ProgressiveDepthPruner(model, [1, 4], schedule=LinearSchedule(m=4), mode=mode, freeze_removed=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for epoch in range(3):
        pruner.set_epoch(epoch)
        optimizer.zero_grad()
        model(torch.randn(2, 3, 32, 32)).square().mean().backward()
        optimizer.step()
    removed = [n for n in before if n.startswith(("blocks.1.", "blocks.4."))]
    assert removed and all(model.get_parameter(n).grad is None for n in removed)
    assert all(torch.equal(model.get_parameter(n), before[n]) for n in removed)
    assert not torch.equal(model.blocks[2].attn.qkv.weight, before["blocks.2.attn.qkv.weight"])  # the rest trains
    pruner.remove()
    assert all(model.get_parameter(n).requires_grad for n in removed if n != "blocks.4.norm1.weight")
    assert not model.blocks[4].norm1.weight.requires_grad


def test_freeze_removed_keeps_weights_a_kept_block_shares_training():
    model = Tracker(depth=4)
    model.backbone.blocks[1].mlp[0].weight = model.backbone.blocks[2].mlp[0].weight  # tied across the cut
    pruner = ProgressiveDepthPruner(model, [1], blocks="backbone.blocks", freeze_removed=True)
    assert model.backbone.blocks[1].mlp[0].weight.requires_grad
    assert not model.backbone.blocks[1].mlp[2].weight.requires_grad
    assert pruner.finalize().mapping == {0: 0, 2: 1, 3: 2}
    assert all(p.requires_grad for p in model.parameters())  # finalize() thawed before deleting


def test_freeze_removed_is_part_of_the_resumable_state():
    frozen = ProgressiveDepthPruner(tiny_vit(depth=4), [1], freeze_removed=True)
    state = frozen.state_dict()
    assert state["freeze_removed"] is True and "freeze_removed=True" in repr(frozen)
    with pytest.raises(DistilkitError, match="freeze_removed=True but this pruner has False"):
        ProgressiveDepthPruner(tiny_vit(depth=4), [1]).load_state_dict(state)
    legacy = {k: v for k, v in ProgressiveDepthPruner(tiny_vit(depth=4), [1]).state_dict().items() if k != "freeze_removed"}
    ProgressiveDepthPruner(tiny_vit(depth=4), [1], freeze_removed=True).load_state_dict(legacy)  # states from before it
    with pytest.raises(DistilkitError, match="freeze_removed must be True or False"):
        ProgressiveDepthPruner(tiny_vit(depth=4), [1], freeze_removed="yes")
