"""Plan a recipe before training: apply every stage to untrained models, so that what only the models reveal
(a layer the model lacks, a loss its model cannot serve, a family option value) fails before anything trains,
naming the recipe file, line and key; the rows are what `distilkit prune --dry-run` prints."""

from __future__ import annotations

from typing import Any, Optional

from distilkit.errors import DistilkitError
from distilkit.recipes.measure import cost
from distilkit.recipes.schema import Recipe, effective_losses
from distilkit.recipes.stages import StageProblem, finish_stage, layers_to_remove, model_depth, setup_stage


def plan(recipe: Recipe, budget_name: str, teacher: Optional[Any] = None, macs: bool = True) -> list[dict[str, Any]]:
    """Each stage's resulting architecture, params and (with `macs`) MACs, from applying the route to untrained models.

    Every run plans before it trains: what only the models reveal (a layer the model lacks, a loss its
    model cannot serve, a family option value) is raised here naming the recipe file, line and key.
    """
    budget, family = recipe.budget(budget_name), recipe.model_family
    rows, previous = [], teacher
    for index, stage in enumerate(recipe.stages):
        result = _plan_stage(recipe, budget_name, index, previous)
        if index == 0:
            family.check_plan(recipe, budget_name, result)
        if macs:
            size = cost(result, family.example_inputs(budget))
        else:
            size = {"params": sum(p.numel() for p in result.parameters()), "macs": None}
        row = {"name": stage.name, "kind": stage.kind, **family.describe(result), **size,
               "epochs": budget.stage(stage.name).epochs, "losses": effective_losses(stage, budget.stage(stage.name))}
        if stage.kind == "depth":
            row["remove"] = layers_to_remove(stage, model_depth(family, previous))
        rows.append(row)
        previous = result
    return rows


def _plan_stage(recipe: Recipe, budget_name: str, index: int, previous: Optional[Any]) -> Any:
    """Stage `index` applied to the untrained `previous` result; returns its result model."""
    stage, budget, family = recipe.stages[index], recipe.budget(budget_name), recipe.model_family
    if stage.kind == "teacher" and previous is not None:
        return previous
    entry = budget.stage(stage.name)
    try:
        setup = setup_stage(family, stage, budget, previous)
        finish_stage(stage, setup, float(entry.epochs))
    except StageProblem as err:
        raise recipe.fail(("stages", index, err.key), str(err)) from None
    except DistilkitError as err:
        raise recipe.fail(("stages", index), str(err)) from None
    problem = family.loss_problem(effective_losses(stage, entry), setup.student)
    if problem:
        loss, message = problem
        in_budget = loss in entry.losses  # added or re-weighted by the budget
        path = ("budgets", budget_name, "stages", stage.name, "losses", loss) if in_budget else ("stages", index, "losses", loss)
        raise recipe.fail(path, message)
    return setup.student
