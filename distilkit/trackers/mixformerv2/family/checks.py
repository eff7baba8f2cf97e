"""Recipe checks of the MixFormerV2 family: model presets, config overrides (types and caps), the size of the
models a budget builds, and tracker options (keys and types here; values when a run is planned)."""

from __future__ import annotations

import inspect
import typing
from typing import Any, Optional

from distilkit.errors import DistilkitError
from distilkit.limits import (MAX_CLASSES, MAX_CONTEXT, MAX_CROP, MAX_IMAGE_INPUT, MAX_LAYERS, MAX_MLP_RATIO,
                              MAX_MODEL_PARAMS, MAX_TEMPLATES, MAX_WIDTH)
from distilkit.recipes.schema import Budget, Recipe, Stage, check_model_presets, typed_options
from distilkit.recipes.validate import Context, Path
from distilkit.trackers.mixformerv2.config import PRESETS, MixFormerV2Config
from distilkit.trackers.mixformerv2.family.models import stage_config

#: Caps on the MixFormerV2Config values a recipe overrides (the config checks their lower bounds itself).
CONFIG_CAPS = {"embed_dim": MAX_WIDTH, "depth": MAX_LAYERS, "num_heads": MAX_WIDTH, "mlp_ratio": MAX_MLP_RATIO,
               "mlp_hidden": MAX_WIDTH, "patch_size": MAX_CROP, "template_size": MAX_CROP, "search_size": MAX_CROP,
               "num_online_templates": MAX_TEMPLATES, "norm_eps": 1.0, "bins": MAX_WIDTH, "head_hidden": MAX_WIDTH,
               "corner_channel": MAX_WIDTH, "search_factor": MAX_CONTEXT, "legacy_num_classes": MAX_CLASSES,
               "legacy_img_size": MAX_IMAGE_INPUT, "drop_path_rate": 1.0}  # drop_path_rate: refused, the budget's drop_path

#: MixFormerV2Tracker arguments the runner sets itself (from the stage model and the budget's crops).
_TRACKER_SET_BY_RUNNER = frozenset({"self", "model", "template_factor", "search_factor", "template_size", "search_size",
                                    "device", "online_update"})  # reports evaluate with and without updates


def check_models(recipe: Recipe, ctx: Context) -> None:
    """Model names, config overrides and tracker options against distilkit.trackers.mixformerv2, for every budget."""
    check_model_presets(recipe, ctx, PRESETS, typing.get_type_hints(MixFormerV2Config), CONFIG_CAPS,
                        "MixFormerV2Config field", _stage_model_problem)
    for bname, budget in recipe.budgets.items():
        _check_tracker_options(budget, ctx, ("budgets", bname, "eval", "tracker"))


def _stage_model_problem(stage: Stage, budget: Budget) -> Optional[str]:
    try:
        return _model_size_problem(stage_config(stage, budget))
    except DistilkitError as err:
        return str(err)


def _check_tracker_options(budget: Budget, ctx: Context, path: Path) -> None:
    """`eval.tracker` keys and value types against MixFormerV2Tracker's signature (its value ranges are
    checked when the run is planned, by building one)."""
    from distilkit.trackers.mixformerv2.tracker import MixFormerV2Tracker

    names = set(inspect.signature(MixFormerV2Tracker.__init__).parameters) - _TRACKER_SET_BY_RUNNER
    hints = {k: v for k, v in typing.get_type_hints(MixFormerV2Tracker.__init__).items() if k in names}
    budget.options.eval.tracker = typed_options(budget.options.eval.tracker, hints, ctx, path, "MixFormerV2Tracker option")


def _model_size_problem(config: Any) -> Optional[str]:
    """Why a MixFormerV2Config describes an absurdly large model (parameters counted roughly from the config,
    before anything is built: attention 4·D² and MLP 2·D·hidden per block), or None."""
    hidden = max(config.mlp_hidden) if config.mlp_hidden else int(config.embed_dim * config.mlp_ratio)
    params = config.depth * (4 * config.embed_dim**2 + 2 * config.embed_dim * hidden)
    if params > MAX_MODEL_PARAMS:
        return f"its backbone has about {params:,} parameters, more than the {MAX_MODEL_PARAMS:,} allowed"
    return None


def check_tracker(recipe: Recipe, budget_name: str, model: Any) -> None:
    """Build the budget's tracker once (neither prepacked nor compiled: cheap) so that its option values
    are checked by the tracker itself before anything trains."""
    from distilkit.trackers.mixformerv2.tracker import MixFormerV2Tracker

    budget = recipe.budget(budget_name)
    try:
        MixFormerV2Tracker(model, template_factor=budget.template_factor, search_factor=budget.tracking_search_factor,
                           **{**budget.eval.tracker, "prepack": False, "compile": False})
    except DistilkitError as err:
        raise recipe.fail(("budgets", budget_name, "eval", "tracker"), str(err)) from None
