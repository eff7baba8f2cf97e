"""Recipes: validated YAML routes of distillation/pruning stages, and the resumable, multi-process runner."""

from __future__ import annotations

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
    "Budget",
    "OptimizerSpec",
    "PruneOptions",
    "Recipe",
    "Stage",
    "StageBudget",
    "load_recipe",
    "plan",
    "resolve_recipe_path",
    "run_recipe",
    "shipped_recipes",
]


def __getattr__(name: str):
    """The runner pulls in torch and the model zoo: import it only when asked for."""
    if name in ("PruneOptions", "run_recipe", "plan"):
        from distilkit.recipes import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'distilkit.recipes' has no attribute {name!r}")
