"""ProgressiveWidthPruner: exact gates, schedule, resume, finalize = reduce_mlp_ratio, DDP-friendliness."""

from __future__ import annotations

import copy
import json

import pytest
import timm
import torch

from distilkit.errors import DistilkitError
from distilkit.schedule import CosineSchedule, LinearSchedule
from distilkit.width import ProgressiveWidthPruner, reduce_mlp_ratio

pytestmark = pytest.mark.isa_sensitive  # float results: rerun under .ci/avx2.env


def tiny_vit(depth: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=depth).eval()


@pytest.fixture
def x() -> torch.Tensor:
    torch.manual_seed(2)
    return torch.randn(2, 3, 32, 32)


def test_gates_at_one_are_the_original_model_exactly(x):
    model = tiny_vit()
    with torch.no_grad():
        y = model(x)
        pruner = ProgressiveWidthPruner(model, 1.0, schedule=CosineSchedule(m=10))
        assert pruner.gamma == 1.0
        assert torch.equal(model(x), y)
        pruner.set_epoch(3)
        assert 0 < pruner.gamma < 1 and not torch.allclose(model(x), y)


def test_gates_at_zero_equal_the_sliced_model(x):
    model = tiny_vit()
    sliced = copy.deepcopy(model)
    reference = reduce_mlp_ratio(sliced, 1.0)
    pruner = ProgressiveWidthPruner(model, 1.0, schedule=CosineSchedule(m=4))
    assert pruner.drops == {b.name: tuple(c for c in range(768) if c not in b.kept) for b in reference.blocks}
    pruner.set_epoch(4)
    assert pruner.gamma == 0.0
    with torch.no_grad():
        gated = model(x)
        assert (gated - sliced(x)).abs().max() <= 1e-5
    report = pruner.finalize()
    assert report.to_dict() == reference.to_dict()
    assert {n: p.shape for n, p in model.named_parameters()} == {n: p.shape for n, p in sliced.named_parameters()}
    assert all(not b.mlp.fc2._forward_pre_hooks for b in model.blocks)  # gates are gone
    with torch.no_grad():
        assert (model(x) - gated).abs().max() <= 1e-5


def test_mlp_norm_over_hidden_channels_is_refused_untouched():
    """timm's scale_mlp_norm puts a LayerNorm between fc1 and fc2: gating cannot equal slicing there."""
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32,
                              depth=2, num_heads=2, scale_mlp_norm=True).eval()
    weights = {n: p.clone() for n, p in model.state_dict().items()}
    with pytest.raises(DistilkitError, match="blocks.0.mlp: a layer between fc1 and fc2 mixes hidden channels"):
        ProgressiveWidthPruner(model, 1.0)
    assert all(torch.equal(weights[n], p) for n, p in model.state_dict().items())
    assert all(not b.mlp.fc2._forward_pre_hooks for b in model.blocks)
    reduce_mlp_ratio(model, 1.0)  # one-shot slicing (norm included) stays available
    assert model.blocks[0].mlp.norm.weight.shape == (32,)


def test_gate_scales_only_the_dropped_channels(x):
    model = tiny_vit(depth=1)
    pruner = ProgressiveWidthPruner(model, 2.0, schedule=LinearSchedule(m=4))
    pruner.set_epoch(1)  # γ = 0.75
    seen = {}
    model.blocks[0].mlp.fc2.register_forward_pre_hook(lambda m, a: seen.setdefault("in", a[0].detach()))
    act = {}
    model.blocks[0].mlp.act.register_forward_hook(lambda m, a, o: act.setdefault("out", o.detach()))
    with torch.no_grad():
        model(x)
    drop = list(pruner.drops["blocks.0.mlp"])
    keep = [c for c in range(768) if c not in set(drop)]
    assert len(drop) == 384
    torch.testing.assert_close(seen["in"][..., drop], 0.75 * act["out"][..., drop])
    assert torch.equal(seen["in"][..., keep], act["out"][..., keep])


def test_resume_mid_schedule_continues_gamma_and_channels(x):
    schedule = CosineSchedule.official(6)
    model = tiny_vit()
    run = ProgressiveWidthPruner(model, 1.0, schedule=schedule)
    full = [run.set_epoch(e) for e in range(8)]
    run.set_epoch(3)
    state = json.loads(json.dumps(run.state_dict()))  # checkpoints are JSON-able
    trained = copy.deepcopy(model)
    with torch.no_grad():  # training moved the weights: a fresh l2 choice would differ
        for block in trained.blocks:
            block.mlp.fc1.weight.mul_(torch.rand_like(block.mlp.fc1.weight))
    resumed = ProgressiveWidthPruner(trained, 1.0, schedule=schedule)
    assert resumed.drops != run.drops
    resumed.load_state_dict(state)
    assert resumed.drops == run.drops and resumed.progress == 3 and resumed.gamma == full[3]
    assert [resumed.set_epoch(e) for e in range(3, 8)] == full[3:]
    assert full[0] < 1.0 and full[-1] == 0.0


def test_iteration_unit_steps_fractional_epochs():
    pruner = ProgressiveWidthPruner(tiny_vit(depth=1), 1.0, schedule=LinearSchedule(m=2), unit="iteration", iters_per_epoch=4)
    for _ in range(3):
        pruner.step()
    assert pruner.progress == 0.75 and pruner.gamma == pytest.approx(1 - 0.75 / 2)
    assert pruner.set_epoch(1) == 0.5


def test_state_mismatch_and_reuse_are_refused():
    model = tiny_vit(depth=2)
    pruner = ProgressiveWidthPruner(model, 1.0, schedule=CosineSchedule(m=4))
    other = ProgressiveWidthPruner(tiny_vit(depth=2), 2.0, schedule=CosineSchedule(m=4))
    with pytest.raises(DistilkitError, match="hidden_after"):
        pruner.load_state_dict(other.state_dict())
    with pytest.raises(DistilkitError, match="schedule"):
        pruner.load_state_dict({**pruner.state_dict(), "schedule": {"kind": "cosine", "m": 5.0, "offset": 0.0}})
    with pytest.raises(DistilkitError, match="bad channel list"):
        pruner.load_state_dict({**pruner.state_dict(), "drop": [[0, 1], [2]]})
    with pytest.raises(DistilkitError, match="progress must be a finite number"):
        pruner.set_progress(float("nan"))
    pruner.set_epoch(4)
    pruner.finalize()
    with pytest.raises(DistilkitError, match="finalized"):
        pruner.set_epoch(5)
    with pytest.raises(DistilkitError, match="already called"):
        pruner.finalize()


def test_bad_arguments():
    with pytest.raises(DistilkitError, match="ratio must be > 0"):
        ProgressiveWidthPruner(tiny_vit(depth=1), 0)
    with pytest.raises(DistilkitError, match="unknown importance"):
        ProgressiveWidthPruner(tiny_vit(depth=1), 1.0, importance="entropy")
    with pytest.raises(DistilkitError, match="no attribute 'layers'"):
        ProgressiveWidthPruner(tiny_vit(depth=1), 1.0, blocks="layers")
    with pytest.raises(DistilkitError, match="unknown width-pruning unit"):
        ProgressiveWidthPruner(tiny_vit(depth=1), 1.0, unit="step")


def test_gates_add_no_parameters_or_buffers_and_train(x):
    """What DDP sees is unchanged (no new params/buffers); gradients still reach every weight."""
    model = tiny_vit(depth=2).train()
    keys = list(model.state_dict())
    params = [id(p) for p in model.parameters()]
    pruner = ProgressiveWidthPruner(model, 1.0, schedule=CosineSchedule(m=2))
    pruner.set_progress(1.0)
    assert list(model.state_dict()) == keys and [id(p) for p in model.parameters()] == params
    model(x).sum().backward()
    fc1 = model.blocks[0].mlp.fc1.weight
    drop = list(pruner.drops["blocks.0.mlp"])
    assert fc1.grad is not None and fc1.grad[drop].abs().sum() > 0  # γ = 0.5: dropped channels still learn
    pruner.set_progress(2.0)
    model.zero_grad()
    model(x).sum().backward()
    assert fc1.grad[drop].abs().sum() == 0  # γ = 0: they no longer affect the loss


def test_remove_detaches_gates(x):
    model = tiny_vit(depth=1)
    with torch.no_grad():
        y = model(x)
    pruner = ProgressiveWidthPruner(model, 1.0, schedule=CosineSchedule(m=0))
    with torch.no_grad():
        assert not torch.equal(model(x), y)
        pruner.remove()
        assert torch.equal(model(x), y)


def test_finalize_before_gamma_reaches_zero_warns():
    pruner = ProgressiveWidthPruner(tiny_vit(depth=1), 1.0, schedule=CosineSchedule(m=4))
    pruner.set_epoch(1)
    with pytest.warns(UserWarning, match="gamma=0.854"):
        report = pruner.finalize()
    assert report.blocks[0].hidden_after == 192
