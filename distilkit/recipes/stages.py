"""What each stage kind trains: the student, the frozen teacher, the pruner, and what is left after it.

teacher  - train the stage's model on ground truth (skipped when `--teacher` is given)
distill  - new model (e.g. T4 head) distilled from the previous result, backbone copied from it
depth    - PMDP: the previous result with some blocks fading out (γ), distilled from it, then removed
width    - the previous result with MLP channels fading out, distilled from it, then sliced
score    - the previous result plus a score head; only the score head trains (BCE with negatives)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Optional

from torch import nn

from distilkit.depth import ProgressiveDepthPruner, select_layers
from distilkit.errors import DistilkitError
from distilkit.recipes.models import (
    build_stage_model,
    example_inputs,
    freeze_all_but,
    init_from_backbone,
    restore_grad,
    with_score_head,
)
from distilkit.recipes.schema import Budget, Stage, StageBudget
from distilkit.schedule import schedule_from_dict
from distilkit.trackers.mixformerv2 import MixFormerV2
from distilkit.width import ProgressiveWidthPruner

BLOCKS = "backbone.blocks"


class StageProblem(DistilkitError):
    """A stage that cannot be applied to the model it receives; `key` names the stage's recipe key at fault."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


@dataclass
class StageSetup:
    """Everything a stage trains with; `notes` are human-readable lines for the log."""

    student: MixFormerV2
    teacher: Optional[nn.Module]
    pruner: Any = None
    notes: list[str] = field(default_factory=list)
    grad_flags: Optional[dict[str, bool]] = None
    inherited: Optional[set[str]] = None  # parameters carried over from earlier training (None: all of them)


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


def _check_shrinks(stage: Stage, previous: MixFormerV2) -> None:
    """Width stages only narrow MLPs: the target ratio must not exceed any block's current one."""
    cfg = previous.live_config()
    narrowest = min(cfg.block_mlp_hidden)
    if round(cfg.embed_dim * stage.mlp_ratio) > narrowest:
        raise StageProblem("mlp_ratio", f"stage {stage.name!r}: MLP ratio {stage.mlp_ratio:g} is wider than the previous "
                                        f"result's {narrowest / cfg.embed_dim:g}; width pruning only shrinks")


def setup_stage(stage: Stage, budget: Budget, previous: Optional[MixFormerV2], device: str = "cpu") -> StageSetup:
    """Build the student (initialised as the route says), its teacher and pruner for `stage`."""
    entry = budget.stage(stage.name)
    if stage.kind == "teacher":
        return StageSetup(build_stage_model(stage, budget), None, notes=["trained on ground truth"], inherited=set())
    if previous is None:
        raise DistilkitError(f"stage {stage.name!r} needs the previous stage's model")
    depth = len(previous.backbone.blocks)
    if stage.kind == "distill":
        student = build_stage_model(stage, budget)
        notes, copied = [], set()
        if stage.init == "backbone":
            copied = init_from_backbone(student, previous)
            fresh = sorted(k for k in student.state_dict() if k.startswith("backbone.") and k not in copied)
            notes.append(f"backbone initialised from the previous stage ({len(copied)} tensors; new: "
                         f"{', '.join(fresh) or 'none'})")
        _check_pairs(stage, len(student.backbone.blocks), depth)
        return StageSetup(student, previous, notes=notes, inherited=copied)
    student = copy.deepcopy(previous)
    if stage.kind == "depth":
        remove = layers_to_remove(stage, depth)
        _check_pairs(stage, depth, depth, tuple(remove))
        freeze = stage.freeze_removed is not False
        pruner = ProgressiveDepthPruner(student, remove, blocks=BLOCKS, schedule=pruning_schedule(stage, entry), mode=stage.mode,
                                        freeze_removed=freeze)
        fading = "frozen" if freeze else "training"
        note = f"removing layers {remove} of {depth} over m = {entry.m:g} epochs ({fading} while they fade)"
        return StageSetup(student, previous, pruner, [note])
    if stage.kind == "width":
        _check_pairs(stage, depth, depth)
        _check_shrinks(stage, previous)
        pruner = ProgressiveWidthPruner(
            student, stage.mlp_ratio, blocks=BLOCKS, importance=stage.importance,
            schedule=pruning_schedule(stage, entry), example_inputs=example_inputs(budget, device=device),
        )
        return StageSetup(student, previous, pruner, [f"MLP ratio -> {stage.mlp_ratio:g} over m = {entry.m:g} epochs "
                                                      f"({stage.importance} importance)"])
    if stage.kind == "score":
        student = with_score_head(student)
        flags = freeze_all_but(student, "score_head.")
        trainable = sum(p.numel() for p in student.parameters() if p.requires_grad)
        return StageSetup(student, None, notes=[f"score head only: {trainable:,} trainable parameters, the rest frozen"],
                          grad_flags=flags)
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
