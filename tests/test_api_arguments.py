"""Bad arguments to the public toolkit API give one DistilkitError naming the argument; numpy scalars are legal."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from torch import nn

from distilkit import io
from distilkit.depth import ProgressiveDepthPruner, block_influence, select_layers
from distilkit.errors import DistilkitError
from distilkit.profile import latency
from distilkit.schedule import LinearSchedule, StepSchedule, schedule_from_dict
from distilkit.width import reduce_mlp_ratio


def tiny_vit(depth: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32,
                             depth=depth, num_heads=2, num_classes=4).eval()


@pytest.mark.parametrize("call, match", [
    (lambda m: ProgressiveDepthPruner(m, 1), "expected a list of layer indices, got 1"),
    (lambda m: ProgressiveDepthPruner(m, [0], blocks=None), "dotted attribute path"),
    (lambda m: ProgressiveDepthPruner(m, [0], unit="iteration", iters_per_epoch=2.5), "iters_per_epoch must be an int"),
    (lambda m: ProgressiveDepthPruner(m, [0], unit="iteration", iters_per_epoch="3"), "iters_per_epoch must be an int"),
    (lambda m: ProgressiveDepthPruner(m, [0], schedule=lambda t: float("nan")), "schedule gave gamma=nan"),
    (lambda m: ProgressiveDepthPruner(m, [0]).load_state_dict({**ProgressiveDepthPruner(tiny_vit(), [0]).state_dict(),
                                                               "progress": "abc"}),
     "progress must be a finite number, got 'abc'"),
    (lambda m: reduce_mlp_ratio(m, float("inf")), "MLP ratio must be a finite number"),
    (lambda m: reduce_mlp_ratio(m, "1"), "MLP ratio must be a finite number, got '1'"),
    (lambda m: reduce_mlp_ratio(m, 1.0, round_to=1.5), "round_to .* must be an int"),
    (lambda m: reduce_mlp_ratio(m, hidden=40.7), "hidden size must be an int, got 40.7"),
    (lambda m: reduce_mlp_ratio(m, hidden=True), "hidden size must be an int, got True"),
    (lambda m: block_influence(m, torch.randn(2, 3, 32, 32)), "iterable of model inputs"),
    (lambda m: latency(m, torch.randn(1, 3, 32, 32), threads="2"), "latency threads must be an int"),
    (lambda m: latency(m, torch.randn(1, 3, 32, 32), iters=2.5), "latency iters must be an int"),
])
def test_bad_arguments_name_what_is_wrong(call, match) -> None:
    with pytest.raises(DistilkitError, match=match):
        call(tiny_vit())


def test_schedule_arguments() -> None:
    with pytest.raises(DistilkitError, match="steps must be an int, got 2.5"):
        StepSchedule(m=4, steps=2.5)
    with pytest.raises(DistilkitError, match="schedule is a mapping"):
        schedule_from_dict(None)
    with pytest.raises(DistilkitError, match="LinearSchedule: m must be a finite number, got '4'"):
        schedule_from_dict({"kind": "linear", "m": "4"})
    assert StepSchedule(m=4, steps=np.int64(2))(4) == 0.0


def test_custom_schedules_may_return_numpy_or_torch_numbers() -> None:
    for schedule in (lambda t: np.float32(0.25), lambda t: torch.tensor(0.25)):
        assert ProgressiveDepthPruner(tiny_vit(), [0], schedule=schedule).gamma == 0.25
    with pytest.raises(DistilkitError, match="schedule gave gamma='high'"):
        ProgressiveDepthPruner(tiny_vit(), [0], schedule=lambda t: "high")
    pruner = ProgressiveDepthPruner(tiny_vit(), [0], schedule=LinearSchedule(m=4))
    assert pruner.set_progress(torch.tensor(1.0)) == pytest.approx(0.75)  # progress as a 0-d tensor
    assert pruner.set_progress(np.float64(2.0)) == pytest.approx(0.5)


def test_numpy_integers_are_legal_layer_indices_and_counts() -> None:
    assert select_layers(6, method=[np.int64(4), np.int32(1)]) == [1, 4]
    model = tiny_vit()
    pruner = ProgressiveDepthPruner(model, np.argsort([3.0, 1.0, 2.0])[:1], schedule=LinearSchedule(m=2),
                                    unit="iteration", iters_per_epoch=np.int64(2))
    assert pruner.removed == [1] and pruner.step() == pytest.approx(0.75)
    report = reduce_mlp_ratio(tiny_vit(), hidden=np.int64(40), round_to=np.int64(8))
    assert {b.hidden_after for b in report.blocks} == {40}


def test_save_arguments_and_edited_arch_file(tmp_path) -> None:
    with pytest.raises(DistilkitError, match="save\\(arch=...\\) needs"):
        io.save(tiny_vit(), tmp_path / "a", arch="net")
    out = io.save(tiny_vit(), tmp_path / "b")
    spec = json.loads((out / "arch.json").read_text())
    spec["edits"] = [{"op": "reshape", "path": "head", "attrs": {}, "tensors": {"weight": {"kind": "param", "shape": [-1, 3]}}}]
    (out / "arch.json").write_text(json.dumps(spec))
    with pytest.raises(DistilkitError, match="bad shape \\[-1, 3\\] for head.weight"):
        io.load(out)
