"""Loss parts a recipe stage weights: `LossPart` (what a family registers in its `loss_parts`), the generic
feature-distillation part, and `StageLoss`, one stage's weighted choice of them.

Training runs them through `distilkit.distill.Distiller` (frozen teacher, named parts, non-finite checks).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import torch

from distilkit.distill import feature_kd
from distilkit.errors import DistilkitError

PartFn = Callable[[dict[str, Any], Optional[dict[str, Any]], dict[str, Any], "StageLoss"], torch.Tensor]

#: Stage kinds that train on ground truth, and those that distil from the previous result.
SUPERVISED_KINDS = frozenset({"teacher", "distill", "depth", "width"})
DISTILLED_KINDS = frozenset({"distill", "depth", "width"})


@dataclass(frozen=True)
class LossPart:
    """A loss a recipe stage can weight: `fn(student_out, teacher_out, batch, stage_loss)` → scalar, the stage
    kinds that accept it, whether it reads the teacher, and the extra model outputs it reads (`output` from the
    student, `teacher_output` from the teacher; a family's `forward` is asked for them)."""

    fn: PartFn
    kinds: frozenset[str]
    needs_teacher: bool = False
    output: Optional[str] = None
    teacher_output: Optional[str] = None


def _feature(out: dict[str, Any], teacher_out: Any, batch: Any, loss: "StageLoss") -> torch.Tensor:
    return feature_kd(out["features"], teacher_out["features"], loss.feature_pairs)


#: MSE between [student, teacher] block outputs (`feature_pairs` of the stage); a family's forward gives
#: `features`, the list of every block's output tokens.
FEATURE_PART = LossPart(_feature, DISTILLED_KINDS, needs_teacher=True, output="features", teacher_output="features")


class StageLoss:
    """One stage's loss weights over a family's `parts`: `parts()` are the named callables a `distill.Distiller`
    trains with; calling it directly gives (Σ w·part, {part: value}) the same way, for scripts and tests.
    `options` are the family's budget options, for parts that have settings (e.g. a KD temperature)."""

    def __init__(self, weights: dict[str, float], feature_pairs: Optional[list[tuple[int, int]]] = None,
                 attention_layers: int = 4, *, parts: Mapping[str, LossPart], options: Any = None):
        unknown = sorted(set(weights) - set(parts))
        if unknown:
            raise DistilkitError(f"unknown loss part(s) {unknown}; known: {', '.join(parts)}")
        self.registry = parts
        self.weights = {k: float(weights[k]) for k in parts if weights.get(k, 0) != 0}
        self.feature_pairs = [tuple(p) for p in (feature_pairs or [])]
        self.attention_layers = int(attention_layers)
        self.options = options

    @property
    def needs_teacher(self) -> bool:
        return any(self.registry[k].needs_teacher for k in self.weights)

    @property
    def student_outputs(self) -> frozenset[str]:
        """Extra outputs the weighted parts read from the student (e.g. `features`)."""
        return frozenset(o for k in self.weights if (o := self.registry[k].output) is not None)

    @property
    def teacher_outputs(self) -> frozenset[str]:
        """Extra outputs the weighted parts read from the teacher."""
        return frozenset(o for k in self.weights if (o := self.registry[k].teacher_output) is not None)

    def parts(self) -> dict[str, Callable[[Any, Any, Any], torch.Tensor]]:
        """name → fn(student_out, teacher_out, batch) for every weighted part, in the registry's order."""
        return {name: functools.partial(_call_part, name, self) for name in self.weights}

    def __call__(self, out: dict[str, Any], teacher_out: Optional[dict[str, Any]],
                 batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {name: fn(out, teacher_out, batch) for name, fn in self.parts().items()}
        total = sum(self.weights[k] * v for k, v in parts.items())
        return total, parts


def _call_part(name: str, loss: StageLoss, out: Any, teacher_out: Any, batch: Any) -> torch.Tensor:
    """Looked up at call time, so a part replaced in the registry (e.g. by a test) is the one that runs."""
    return loss.registry[name].fn(out, teacher_out, batch, loss)
