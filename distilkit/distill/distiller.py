"""Distiller: one training step's student + frozen-teacher forward and the weighted loss sum.

The teacher is held outside module registration: `parameters()`, `state_dict()` and optimisers see
only the student and the extra training modules (projectors, learnable loss modules), yet
`.to()` / `.cuda()` / `.float()` still move the teacher along. The teacher is frozen, kept in eval
mode whatever `train()` is called with, and run under `torch.no_grad()`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from distilkit.checks import as_number
from distilkit.errors import DistilkitError, NonFiniteLossError
from distilkit.inputs import call_model

LossFn = Callable[[Any, Any, Any], torch.Tensor]
ForwardFn = Callable[[nn.Module, Any], Any]


class Distiller(nn.Module):
    """Runs student and frozen teacher on a batch and returns (Σ w·loss, {name: detached loss}).
    `teacher=None` trains on the batch alone (losses get teacher_out None): the same named, weighted,
    checked parts for stages without a teacher.

    `losses`: name -> fn(student_out, teacher_out, batch) -> scalar tensor. `weights`: name ->
    float, missing names weigh 1.0; weight 0 logs a part without adding it to the total.
    `forward_fn(model, batch)` adapts the batch to the models (default `distilkit.inputs.call_model`: a
    tensor positionally, a tuple/list unpacked, a dict as keyword arguments);
    `teacher_forward_fn` overrides it for the teacher (e.g. other crops). `modules` are extra
    trainable modules (e.g. a FeatureProjector); losses that are nn.Modules are registered too.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        losses: Mapping[str, LossFn],
        weights: Mapping[str, float] | None = None,
        *,
        forward_fn: ForwardFn = call_model,
        teacher_forward_fn: ForwardFn | None = None,
        modules: Mapping[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if not losses:
            raise DistilkitError("Distiller: no losses given")
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(losses))
        if unknown:
            raise DistilkitError(
                f"Distiller: weights for unknown losses {unknown} (losses: {sorted(losses)})"
            )
        weights = {name: as_number(weight, f"Distiller: weight for loss {name!r}") for name, weight in weights.items()}
        student_params = {id(p) for p in student.parameters()}
        if teacher is not None and any(id(p) in student_params for p in teacher.parameters()):
            raise DistilkitError(
                "Distiller: teacher and student share parameters; pass a copy (copy.deepcopy)"
            )

        self.student = student
        self.extra = nn.ModuleDict(dict(modules or {}))
        self.loss_modules = nn.ModuleDict({k: v for k, v in losses.items() if isinstance(v, nn.Module)})
        self.losses = dict(losses)
        self.weights = {name: weights.get(name, 1.0) for name in losses}
        self.forward_fn = forward_fn
        self.teacher_forward_fn = teacher_forward_fn or forward_fn
        object.__setattr__(self, "_teacher", teacher)  # unregistered: not in parameters()/state_dict()
        if teacher is not None:
            teacher.requires_grad_(False)
            teacher.eval()

    @property
    def teacher(self) -> nn.Module | None:
        """The frozen teacher (not a registered submodule), or None."""
        return self._teacher

    def train(self, mode: bool = True) -> "Distiller":
        """Set student and extra modules to `mode`; the teacher always stays in eval mode."""
        super().train(mode)
        if self._teacher is not None:
            self._teacher.eval()
        return self

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> "Distiller":
        """torch's hook behind .to() / .cuda() / .float(): apply it to the unregistered teacher too."""
        super()._apply(fn, recurse)
        if self._teacher is not None:
            self._teacher._apply(fn, recurse)
        return self

    def forward(
        self, batch: Any, step: int | None = None, return_outputs: bool = False
    ) -> (
        tuple[torch.Tensor, dict[str, torch.Tensor]]
        | tuple[torch.Tensor, dict[str, torch.Tensor], tuple[Any, Any]]
    ):
        """One step -> (total, parts); with `return_outputs`, (total, parts, (student_out, teacher_out)).

        Raises NonFiniteLossError naming the part (and `step`) when a loss is NaN or infinite.
        """
        teacher_out = None
        if self._teacher is not None:
            if self._teacher.training:
                self._teacher.eval()
            with torch.no_grad():
                teacher_out = self.teacher_forward_fn(self._teacher, batch)
        student_out = self.forward_fn(self.student, batch)

        where = "" if step is None else f" at step {step}"
        total: torch.Tensor | None = None
        parts: dict[str, torch.Tensor] = {}
        for name, loss_fn in self.losses.items():
            value = loss_fn(student_out, teacher_out, batch)
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise DistilkitError(f"Distiller: loss {name!r} must return a scalar tensor, got {shape}")
            value = value.reshape(())
            if not torch.isfinite(value):
                raise NonFiniteLossError(f"loss part {name!r} is {value.item()}{where}", part=name, value=value.item())
            parts[name] = value.detach()
            weight = self.weights[name]
            if weight != 0:
                total = value * weight if total is None else total + value * weight
        if total is None:
            raise DistilkitError("Distiller: every loss weight is 0, nothing to optimise")
        if not torch.isfinite(total):
            raise NonFiniteLossError(f"weighted total loss is {total.item()}{where}")
        return (total, parts, (student_out, teacher_out)) if return_outputs else (total, parts)
