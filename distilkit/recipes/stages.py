"""What each generic stage kind trains: the student, the frozen teacher, the pruner, and what is left after it.

teacher  - train the stage's model on ground truth (skipped when `--teacher` is given)
distill  - new model (e.g. a T4 head) distilled from the previous result, backbone copied from it
depth    - PMDP: the previous result with some blocks fading out (γ), distilled from it, then removed
width    - the previous result with MLP channels fading out, distilled from it, then sliced
A family's own kinds (MixFormerV2's `score`) are set up by the family (`ModelFamily.setup_extra_stage`).
"""

from __future__ import annotations

import copy
from typing import Any, Optional

from torch import nn

from distilkit.blocks import resolve_blocks
from distilkit.depth import ProgressiveDepthPruner, select_layers
from distilkit.errors import DistilkitError
from distilkit.recipes.family import ModelFamily, StageSetup
from distilkit.recipes.models import restore_grad
from distilkit.recipes.schema import Budget, Stage, StageBudget
from distilkit.schedule import schedule_from_dict
from distilkit.width import ProgressiveWidthPruner, find_mlp_sites

__all__ = ["StageProblem", "StageSetup", "finish_stage", "layers_to_remove", "model_depth", "setup_stage"]


class StageProblem(DistilkitError):
    """A stage that cannot be applied to the model it receives; `key` names the stage's recipe key at fault."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def model_depth(family: ModelFamily, model: nn.Module) -> int:
    """Number of residual blocks at the family's `blocks` path."""
    return len(resolve_blocks(model, family.blocks))


def pruning_schedule(stage: Stage, entry: StageBudget) -> Any:
    spec: dict[str, Any] = {"kind": stage.schedule.kind, "m": float(entry.m or 0.0), "offset": stage.schedule.offset}
    if stage.schedule.kind == "step":
        spec["steps"] = stage.schedule.steps
    return schedule_from_dict(spec)


def layers_to_remove(stage: Stage, depth: int) -> list[int]:
    """The stage's `remove` list, or `select_layers(depth, keep, method)`; checked against the depth."""
    if stage.remove is not None:
        bad = [i for i in stage.remove if i >= depth]
        if bad:
            raise StageProblem("remove", f"stage {stage.name!r}: cannot remove layer(s) {bad} of a {depth}-layer model")
        if len(stage.remove) >= depth:
            raise StageProblem("remove", f"stage {stage.name!r}: removing {len(stage.remove)} of {depth} layers leaves none")
        return sorted(stage.remove)
    if not 1 <= stage.keep <= depth:
        raise StageProblem("keep", f"stage {stage.name!r}: cannot keep {stage.keep} layers of a {depth}-layer model")
    return list(select_layers(depth, stage.keep, method=stage.method))


def _check_pairs(stage: Stage, student_depth: int, teacher_depth: int, removed: tuple[int, ...] = ()) -> None:
    for s, t in stage.feature_pairs:
        if s in removed:
            raise StageProblem("feature_pairs", f"stage {stage.name!r}: feature pair [{s}, {t}] uses student layer {s}, which is "
                                                "removed")
        if s >= student_depth or t >= teacher_depth:
            raise StageProblem("feature_pairs",
                f"stage {stage.name!r}: feature pair [{s}, {t}] is outside the {student_depth}-layer student "
                f"/ {teacher_depth}-layer teacher"
            )


def _check_shrinks(stage: Stage, family: ModelFamily, previous: nn.Module) -> None:
    """Width stages only narrow MLPs: the target ratio must not exceed any block's current one."""
    sites = find_mlp_sites(previous, family.blocks)
    narrowest = min(sites, key=lambda s: s.hidden)
    if round(narrowest.embed_dim * stage.mlp_ratio) > narrowest.hidden:
        raise StageProblem("mlp_ratio", f"stage {stage.name!r}: MLP ratio {stage.mlp_ratio:g} is wider than the previous "
                                        f"result's {narrowest.hidden / narrowest.embed_dim:g}; width pruning only shrinks")


def setup_stage(family: ModelFamily, stage: Stage, budget: Budget, previous: Optional[nn.Module],
                device: str = "cpu") -> StageSetup:
    """Build the student (initialised as the route says), its teacher and pruner for `stage`."""
    entry = budget.stage(stage.name)
    if stage.kind == "teacher":
        return StageSetup(family.build(stage, budget), None, notes=["trained on ground truth"], inherited=set())
    if previous is None:
        raise DistilkitError(f"stage {stage.name!r} needs the previous stage's model")
    depth = model_depth(family, previous)
    if stage.kind == "distill":
        student = family.build(stage, budget)
        notes, copied = [], set()
        if stage.init == "backbone":
            copied = family.init_student(student, previous)
            fresh = sorted(k for k in student.state_dict() if family.is_backbone(k) and k not in copied)
            notes.append(f"backbone initialised from the previous stage ({len(copied)} tensors; new: "
                         f"{', '.join(fresh) or 'none'})")
        _check_pairs(stage, model_depth(family, student), depth)
        return StageSetup(student, previous, notes=notes, inherited=copied)
    if stage.kind == "depth":
        student = copy.deepcopy(previous)
        remove = layers_to_remove(stage, depth)
        _check_pairs(stage, depth, depth, tuple(remove))
        freeze = stage.freeze_removed is not False
        pruner = ProgressiveDepthPruner(student, remove, blocks=family.blocks, schedule=pruning_schedule(stage, entry),
                                        mode=stage.mode, freeze_removed=freeze)
        fading = "frozen" if freeze else "training"
        note = f"removing layers {remove} of {depth} over m = {entry.m:g} epochs ({fading} while they fade)"
        return StageSetup(student, previous, pruner, [note])
    if stage.kind == "width":
        student = copy.deepcopy(previous)
        _check_pairs(stage, depth, depth)
        _check_shrinks(stage, family, previous)
        pruner = ProgressiveWidthPruner(
            student, stage.mlp_ratio, blocks=family.blocks, importance=stage.importance,
            schedule=pruning_schedule(stage, entry), example_inputs=family.example_inputs(budget, device=device),
        )
        return StageSetup(student, previous, pruner, [f"MLP ratio -> {stage.mlp_ratio:g} over m = {entry.m:g} epochs "
                                                      f"({stage.importance} importance)"])
    if stage.kind in family.extra_stage_kinds:
        return family.setup_extra_stage(stage, budget, copy.deepcopy(previous), device)
    raise DistilkitError(f"unknown stage kind {stage.kind!r}")


def finish_stage(stage: Stage, setup: StageSetup, end: float) -> dict[str, Any]:
    """Make the pruning permanent at progress `end` (the stage's epochs, where γ has reached 0);
    returns facts for the stage metrics (layer map, new widths)."""
    info: dict[str, Any] = {}
    if setup.pruner is not None:
        setup.pruner.set_progress(end)
    if isinstance(setup.pruner, ProgressiveDepthPruner):
        layer_map = setup.pruner.finalize()
        info["layer_map"] = layer_map.to_dict()
        if stage.feature_pairs:
            pairs = layer_map.remap([(s, t) for s, t in stage.feature_pairs], drop_removed=True)
            info["feature_pairs_after"] = [list(p) for p in pairs]
    elif isinstance(setup.pruner, ProgressiveWidthPruner):
        report = setup.pruner.finalize()
        info["width"] = report.to_dict()
    if setup.grad_flags is not None:
        restore_grad(setup.student, setup.grad_flags)
    return info
