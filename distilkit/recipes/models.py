"""Model helpers every family's stages share: preset names under a budget, freezing all but some parameters."""

from __future__ import annotations

from torch import nn

from distilkit.recipes.schema import Budget, Stage


def model_name(stage: Stage, budget: Budget) -> str:
    """The preset a teacher/distill stage builds under this budget (e.g. mixformerv2-12l-tiny)."""
    assert stage.model is not None
    return stage.model + budget.model_suffix


def freeze_all_but(model: nn.Module, prefix: str) -> dict[str, bool]:
    """requires_grad only for parameters under `prefix`; returns the previous flags (for `restore_grad`)."""
    before = {name: p.requires_grad for name, p in model.named_parameters()}
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(prefix) and before[name])
    return before


def restore_grad(model: nn.Module, flags: dict[str, bool]) -> None:
    """Undo `freeze_all_but`; parameters it did not know keep their flag."""
    for name, p in model.named_parameters():
        p.requires_grad_(flags.get(name, p.requires_grad))
