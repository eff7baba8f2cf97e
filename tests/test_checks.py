"""One way to check arguments (distilkit.checks), one way to call a model (distilkit.inputs.call_model), and
DistilkitError as a ValueError: numpy scalars are legal everywhere the public API takes a number."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from distilkit import distill, inputs
from distilkit.data.crop import crop_side
from distilkit.depth import LayerMap, block_influence, select_layers, select_layers_by_influence
from distilkit.distill import Distiller, FeatureProjector, logit_kd
from distilkit.errors import DistilkitError
from distilkit.schedule import CosineSchedule, LinearSchedule, schedule_to_dict


def test_select_layers_takes_numpy_integers_and_scores() -> None:
    assert select_layers(12, np.int64(8)) == select_layers(12, 8) == [0, 3, 6, 9]
    assert select_layers(np.int64(6), np.int32(4), "first") == [4, 5]
    assert select_layers(np.int64(6), method=[np.int64(5)], keep=np.int64(5)) == [5]
    assert select_layers_by_influence(np.array([0.3, 0.1, 0.2], np.float32), np.int64(2)) == [1]
    with pytest.raises(DistilkitError, match="influence score of block 1 must be a finite number, got '0.1'"):
        select_layers_by_influence([0.3, "0.1", 0.2], 2)


def test_distiller_weights_take_any_real_number() -> None:
    student, teacher = nn.Linear(2, 2), nn.Linear(2, 2)
    mse = lambda s, t, b: (s - t).pow(2).mean()  # noqa: E731
    weights = {"a": np.float32(0.5), "b": np.float64(0.25), "c": torch.tensor(2.0), "d": 1}
    distiller = Distiller(student, teacher, dict.fromkeys(weights, mse), weights)
    assert distiller.weights == {"a": 0.5, "b": 0.25, "c": 2.0, "d": 1.0}
    assert all(type(w) is float for w in distiller.weights.values())
    with pytest.raises(DistilkitError, match="weight for loss 'a' must be a finite number, got '1'"):
        Distiller(student, teacher, {"a": mse}, {"a": "1"})


def test_feature_projector_and_schedules_take_numpy_numbers() -> None:
    proj = FeatureProjector([(np.int64(0), np.int32(1))], np.int64(8), np.array([16, 16]))
    assert proj.pairs == [(0, 1)] and type(proj.pairs[0][0]) is int
    assert proj.proj["0->1"].in_features == 8 and proj.proj["0->1"].out_features == 16
    with pytest.raises(DistilkitError, match="student width of layer 0 must be an int, got 8.5"):
        FeatureProjector([(0, 0)], {0: 8.5}, 8)  # was truncated to 8
    with pytest.raises(DistilkitError, match="layer pairs must be .* ints, got \\(0.5, 1\\)"):
        FeatureProjector([(0.5, 1)], 8, 8)
    schedule = LinearSchedule(m=np.float32(4.0), offset=torch.tensor(1.0))
    assert type(schedule.m) is float and type(schedule.offset) is float
    assert json.loads(json.dumps(schedule_to_dict(schedule))) == {"kind": "linear", "m": 4.0, "offset": 1.0}
    assert type(CosineSchedule(m=40).m) is int  # Python numbers stay as given (checkpoint states unchanged)
    assert crop_side(np.array([0.0, 0.0, 4.0, 4.0]), np.float32(2.0)) == 8
    student, teacher = torch.randn(2, 5), torch.randn(2, 5)
    assert torch.equal(logit_kd(student, teacher, temperature=torch.tensor(2.0)),
                       logit_kd(student, teacher, temperature=2.0))
    with pytest.raises(DistilkitError, match="temperature must be > 0, got 0"):
        logit_kd(student, teacher, temperature=np.float32(0.0))


def test_a_bad_argument_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="keep must be an int, got 2.5"):
        select_layers(12, 2.5)
    try:
        select_layers(12, 13)
    except ValueError as err:  # what a caller of numpy or torch would write
        assert isinstance(err, DistilkitError) and "exceeds depth" in str(err)
    with pytest.raises(DistilkitError, match="^remove: layer 9 is out of range"):  # not re-wrapped as a bad spec
        LayerMap.from_dict({"old_depth": 4, "removed": [9]})


class Keywords(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return self.blocks(x) * scale


def test_one_call_model_for_profiling_pruning_and_distillation() -> None:
    assert distill.call_model is inputs.call_model
    torch.manual_seed(0)
    student, teacher, x = Keywords(), Keywords(), torch.randn(3, 4)
    mse = lambda s, t, b: (s - t).pow(2).mean()  # noqa: E731
    distiller = Distiller(student, teacher, {"mse": mse})
    for batch in ({"x": x, "scale": 2.0}, (x, 2.0), [x, 2.0]):  # the default forward unpacks, as profiling does
        _, _, (s_out, t_out) = distiller(batch, return_outputs=True)
        with torch.no_grad():
            assert torch.equal(s_out, student(x, 2.0)) and torch.equal(t_out, teacher(x, 2.0))
    assert len(block_influence(student, [{"x": x}, (x,), x])) == 2
    for call in (lambda: distiller("abc"), lambda: block_influence(student, ["abc"])):
        with pytest.raises(DistilkitError, match="model inputs must be a tensor, a tuple/list .* got str"):
            call()
