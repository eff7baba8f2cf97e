from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from distilkit.distill import Distiller, FeatureProjector, feature_kd
from distilkit.errors import DistilkitError, NonFiniteLossError


class Net(nn.Module):
    """Tiny model with dropout and batch norm, so train/eval mode changes its output."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.fc = nn.Linear(4, width)
        self.bn = nn.BatchNorm1d(width)
        self.drop = nn.Dropout(0.5)
        self.grad_enabled: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.grad_enabled.append(torch.is_grad_enabled())
        return self.drop(self.bn(self.fc(x)))


def mse(student_out: torch.Tensor, teacher_out: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    return (student_out - teacher_out).pow(2).mean()


class LearnedScaleLoss(nn.Module):
    """A loss with its own trainable parameters."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.scale = nn.Linear(width, width)

    def forward(
        self, student_out: torch.Tensor, teacher_out: torch.Tensor, batch: torch.Tensor
    ) -> torch.Tensor:
        return (self.scale(teacher_out) - student_out).pow(2).mean()


def make(**kwargs) -> tuple[Net, Net, Distiller]:
    torch.manual_seed(0)
    student, teacher = Net(), Net()
    return student, teacher, Distiller(student, teacher, {"mse": mse, **kwargs.pop("losses", {})}, **kwargs)


def test_teacher_frozen_eval_no_grad_and_never_updated() -> None:
    student, teacher, distiller = make()
    before = copy.deepcopy(teacher.state_dict())
    assert not any(p.requires_grad for p in teacher.parameters())
    params = list(distiller.parameters())
    assert {id(p) for p in params} == {id(p) for p in student.parameters()}
    assert not any(k.startswith("_teacher") for k in distiller.state_dict())
    opt = torch.optim.AdamW(params, lr=0.1, weight_decay=0.1)
    distiller.train()
    for step in range(3):
        total, parts = distiller(torch.randn(6, 4), step=step)
        opt.zero_grad()
        total.backward()
        opt.step()
        distiller.train()
        assert not teacher.training and student.training
    teacher.train()
    assert not distiller.train().teacher.training  # train() re-asserts eval
    teacher.train()  # even a direct call is undone at the next step
    distiller(torch.randn(6, 4))
    assert not teacher.training
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key  # BN running stats too: eval mode throughout
    assert teacher.grad_enabled == [False] * 4 and student.grad_enabled == [True] * 4
    assert all(p.grad is None for p in teacher.parameters())


def test_total_is_weighted_sum_and_parts_are_detached() -> None:
    const = lambda s, t, b: torch.tensor(2.0)  # noqa: E731
    _, _, distiller = make(losses={"const": const, "logged": const}, weights={"mse": 0.5, "logged": 0.0})
    distiller.eval()
    total, parts = distiller(torch.randn(4, 4))
    assert set(parts) == {"mse", "const", "logged"}
    assert all(not v.requires_grad and v.dim() == 0 for v in parts.values())
    torch.testing.assert_close(total, 0.5 * parts["mse"] + 2.0)


def test_return_outputs_and_forward_fns() -> None:
    torch.manual_seed(0)
    student, teacher = Net(), Net()
    distiller = Distiller(
        student,
        teacher,
        {"mse": mse},
        forward_fn=lambda model, batch: model(batch["student_x"]),
        teacher_forward_fn=lambda model, batch: model(batch["teacher_x"]),
    )
    batch = {"student_x": torch.randn(3, 4), "teacher_x": torch.randn(3, 4)}
    _, _, (s_out, t_out) = distiller(batch, return_outputs=True)
    with torch.no_grad():
        torch.testing.assert_close(t_out, teacher(batch["teacher_x"]))
    assert s_out.requires_grad and not t_out.requires_grad


def test_extra_modules_and_module_losses_are_trained() -> None:
    torch.manual_seed(0)
    student, teacher = Net(8), Net(16)
    proj = FeatureProjector([(0, 0)], 8, 16)
    loss = lambda s, t, b: feature_kd([s], [t], [(0, 0)], projector=proj)  # noqa: E731
    distiller = Distiller(student, teacher, {"feat": loss}, modules={"projector": proj})
    ids = {id(p) for p in distiller.parameters()}
    assert all(id(p) in ids for p in proj.parameters())
    module_loss = LearnedScaleLoss(16)
    distiller = Distiller(copy.deepcopy(student), teacher, {"m": module_loss})
    assert all(id(p) in {id(q) for q in distiller.parameters()} for p in module_loss.parameters())


def test_to_moves_the_teacher_too() -> None:
    _, teacher, distiller = make()
    distiller.to(torch.float64)
    assert next(teacher.parameters()).dtype == torch.float64
    total, _ = distiller(torch.randn(4, 4, dtype=torch.float64))
    assert total.dtype == torch.float64


def test_non_finite_loss_names_part_and_step() -> None:
    bad = lambda s, t, b: s.sum() * float("nan")  # noqa: E731
    _, _, distiller = make(losses={"box_ciou": bad})
    with pytest.raises(NonFiniteLossError, match=r"'box_ciou'.*step 7"):
        distiller(torch.randn(4, 4), step=7)
    with pytest.raises(NonFiniteLossError, match="'box_ciou'"):
        distiller(torch.randn(4, 4))
    assert issubclass(NonFiniteLossError, DistilkitError)


def test_configuration_errors() -> None:
    student = Net()
    with pytest.raises(DistilkitError, match="unknown losses"):
        Distiller(student, Net(), {"mse": mse}, weights={"mes": 1.0})
    with pytest.raises(DistilkitError, match="share parameters"):
        Distiller(student, student, {"mse": mse})
    with pytest.raises(DistilkitError, match="no losses"):
        Distiller(student, Net(), {})
    with pytest.raises(DistilkitError, match="finite number"):
        Distiller(student, Net(), {"mse": mse}, weights={"mse": float("inf")})
    distiller = Distiller(student, Net(), {"vec": lambda s, t, b: s.mean(0)})
    with pytest.raises(DistilkitError, match="'vec' must return a scalar"):
        distiller(torch.randn(4, 4))


def test_without_a_teacher_losses_get_none_and_parts_are_still_checked() -> None:
    student = Net()
    seen = []

    def supervised(student_out, teacher_out, batch):
        seen.append(teacher_out)
        return student_out.pow(2).mean()

    distiller = Distiller(student, None, {"l2": supervised})
    total, parts = distiller(torch.randn(3, 4))
    assert seen == [None] and distiller.teacher is None and set(parts) == {"l2"}
    distiller.train()
    distiller.float()  # .to()/.float() with no teacher to move
    with pytest.raises(NonFiniteLossError, match="loss part 'l2' is nan at step 7") as err:
        distiller(torch.full((3, 4), float("nan")), step=7)
    assert err.value.part == "l2" and math.isnan(err.value.value)
