"""Recipes: validated YAML routes of distillation/pruning stages, the model-family interface they run on, and the
resumable, multi-process runner."""

from __future__ import annotations

from distilkit.recipes.families import family_names, register_family, resolve_family
from distilkit.recipes.family import GENERIC_STAGE_KINDS, ModelFamily, NoOptions, ReportColumn, StageSetup
from distilkit.recipes.schema import (
    Budget,
    OptimizerSpec,
    Recipe,
    Stage,
    StageBudget,
    load_recipe,
    resolve_recipe_path,
    shipped_recipes,
)

__all__ = [
    "FEATURE_PART",
    "GENERIC_STAGE_KINDS",
    "LossPart",
    "ModelFamily",
    "NoOptions",
    "ReportColumn",
    "StageLoss",
    "StageSetup",
    "Budget",
    "OptimizerSpec",
    "PruneOptions",
    "Recipe",
    "Stage",
    "StageBudget",
    "family_names",
    "load_recipe",
    "plan",
    "register_family",
    "resolve_family",
    "resolve_recipe_path",
    "run_recipe",
    "shipped_recipes",
]


def __getattr__(name: str):
    """The runner and the loss parts pull in torch: import them only when asked for."""
    if name in ("PruneOptions", "run_recipe", "plan"):
        from distilkit.recipes import runner

        return getattr(runner, name)
    if name in ("LossPart", "StageLoss", "FEATURE_PART"):
        from distilkit.recipes import losses

        return getattr(losses, name)
    raise AttributeError(f"module 'distilkit.recipes' has no attribute {name!r}")
