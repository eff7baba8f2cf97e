"""MixFormerV2 models of a route: a stage's model for a budget, the score head, `--teacher` files, example inputs."""

from __future__ import annotations

import os
from typing import Any, Optional

import torch

import distilkit.io as dio
from distilkit.errors import DistilkitError
from distilkit.recipes.models import model_name
from distilkit.recipes.schema import Budget, Stage
from distilkit.trackers.mixformerv2.checkpoint import load_official_checkpoint
from distilkit.trackers.mixformerv2.config import MixFormerV2Config, preset
from distilkit.trackers.mixformerv2.model import MixFormerV2, build_model_from_config


def crop_overrides(budget: Budget) -> dict[str, Any]:
    """Input sizes the budget trains with and the search factor its trackers use; every stage model carries them."""
    return {"template_size": budget.template_size, "search_size": budget.search_size,
            "search_factor": budget.tracking_search_factor}


def stage_config(stage: Stage, budget: Budget) -> MixFormerV2Config:
    """Config of a teacher/distill stage's model under this budget (a score head only in score stages);
    building it checks the overrides, so recipes are checked with it before any model exists."""
    overrides = {**budget.model_overrides, **stage.overrides, **crop_overrides(budget)}
    overrides.setdefault("score_head", False)
    return preset(model_name(stage, budget), **overrides)


def build_stage_model(stage: Stage, budget: Budget) -> MixFormerV2:
    """Fresh model of a teacher/distill stage, with the budget's overrides."""
    return build_model_from_config(stage_config(stage, budget))


def with_score_head(model: MixFormerV2) -> MixFormerV2:
    """The same (possibly pruned) model with a fresh score head; existing weights are kept."""
    if model.score_head is not None:
        return model
    cfg = model.live_config()
    cfg.score_head = True
    new = build_model_from_config(cfg)
    missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(not k.startswith("score_head.") for k in missing):
        raise DistilkitError(f"adding a score head changed the model: missing {missing}, unexpected {unexpected}")
    return new


def load_teacher(path: str, stage: Stage, budget: Budget, label: Optional[str] = None) -> MixFormerV2:
    """`--teacher`: a distilkit.io model directory or an official `.pth.tar` (loaded into the stage's model);
    `label` names it in errors (default `--teacher PATH`; e.g. a shipped teacher)."""
    where = f"--teacher {path}" if label is None or label == path else f"teacher {label} ({path})"
    if os.path.isdir(path):
        try:
            model = dio.load(path)
        except DistilkitError as err:
            raise DistilkitError(f"{where}: {err}") from None
        if not isinstance(model, MixFormerV2):
            raise DistilkitError(f"{where}: not a MixFormerV2 model ({type(model).__name__})")
    elif os.path.isfile(path):
        model = build_stage_model(stage, budget)
        report = load_official_checkpoint(model, path)
        if report.missing:
            shown = ", ".join(report.missing[:5]) + (" ..." if len(report.missing) > 5 else "")
            raise DistilkitError(
                f"{where}: {len(report.missing)} weights of {model_name(stage, budget)} are not in the "
                f"checkpoint ({shown}); is it the right model and --budget?"
            )
    else:
        raise DistilkitError(f"{where}: no such file or directory")
    cfg, expected = model.config, stage_config(stage, budget)
    if cfg.head != expected.head:
        raise DistilkitError(
            f"{where}: a {cfg.head!r}-head model, but stage {stage.name!r} builds {model_name(stage, budget)} "
            f"with a {expected.head!r} head; give a teacher of that kind (or change the stage's model)"
        )
    if (cfg.template_size, cfg.search_size) != (budget.template_size, budget.search_size):
        raise DistilkitError(
            f"{where}: model takes {cfg.template_size}/{cfg.search_size} px template/search crops but "
            f"the budget uses {budget.template_size}/{budget.search_size}; pick the matching --budget"
        )
    return model


def example_inputs(budget: Budget, batch: int = 1, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(template, online_template, search) of the budget's sizes, for profiling and latency."""
    g = torch.Generator().manual_seed(0)
    t, s = budget.template_size, budget.search_size
    return (torch.randn(batch, 3, t, t, generator=g).to(device), torch.randn(batch, 3, t, t, generator=g).to(device),
            torch.randn(batch, 3, s, s, generator=g).to(device))


def describe(model: MixFormerV2) -> dict[str, Any]:
    """Architecture facts for plans and reports: depth, MLP ratio, head, bins, score head."""
    cfg = model.live_config()
    hidden = cfg.block_mlp_hidden
    return {
        "depth": cfg.depth,
        "embed_dim": cfg.embed_dim,
        "mlp_ratio": round(sum(hidden) / len(hidden) / cfg.embed_dim, 4) if hidden else 0.0,
        "head": cfg.head,
        "bins": cfg.bins if cfg.head == "t4" else None,
        "score_head": model.score_head is not None,
        "template_size": cfg.template_size,
        "search_size": cfg.search_size,
    }
