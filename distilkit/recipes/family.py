"""The interface a model family implements so that `distilkit prune` can run recipes on it.

The recipe engine (this package) knows only this interface and the generic stage kinds: `teacher` (train on
ground truth), `distill` (a new model distilled from the previous result), `depth` (PMDP), `width` (MLP ratio).
A family says how to build its models from a preset, what its training batches and loss parts are, how a
result is evaluated and what the report shows; it may add stage kinds of its own (MixFormerV2's `score`).
Families are named in a recipe's `family:` key (see `distilkit.recipes.families`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

from distilkit.errors import DistilkitError

if TYPE_CHECKING:  # the interface itself imports no torch: `distilkit recipes` lists recipes without it
    import torch
    from torch import nn

    from distilkit.recipes.losses import LossPart
    from distilkit.recipes.progress import RunLog
    from distilkit.recipes.schema import Budget, Recipe, Stage
    from distilkit.recipes.validate import Context

#: Stage kinds every family has; a family adds its own in `extra_stage_kinds`.
GENERIC_STAGE_KINDS = ("teacher", "distill", "depth", "width")


@dataclass
class NoOptions:
    """Budget settings of a family that has none beyond the generic ones."""


@dataclass
class StageSetup:
    """Everything a stage trains with; `notes` are human-readable lines for the log."""

    student: "nn.Module"
    teacher: "Optional[nn.Module]"
    pruner: Any = None
    notes: list[str] = field(default_factory=list)
    grad_flags: Optional[dict[str, bool]] = None  # requires_grad flags to restore after the stage (frozen parts)
    inherited: Optional[set[str]] = None  # parameters carried over from earlier training (None: all of them)


@dataclass(frozen=True)
class ReportColumn:
    """A column a family adds to the report table: header, and the cell text of a stage (or baseline) row."""

    header: str
    cell: Callable[[dict[str, Any]], str]


class ModelFamily:
    """A kind of model recipes compress (subclass it; the methods without a default must be implemented).

    `name` names it in errors; `budget_options` is the dataclass of its own budget settings, whose fields sit at
    a budget's top level beside the generic ones (a field named `eval` takes the family's keys of `eval:`);
    `loss_parts` are the losses its stages may weight; `blocks` is the attribute path of the residual blocks
    that depth and width stages prune; `metrics` are the report's accuracy figures as (key, label), the first
    the one compared with the teacher; `speed` the row key of the speed plotted against it.
    """

    name: str = ""
    budget_options: type = NoOptions
    extra_stage_kinds: frozenset[str] = frozenset()
    loss_parts: Mapping[str, "LossPart"] = {}
    blocks: str = "blocks"
    metrics: tuple[tuple[str, str], ...] = ()
    speed: tuple[str, str] = ("fps", "CPU FPS (full forward)")
    item_noun: str = "items"
    default_eval_label: str = "held-out test split"

    # -- recipes ---------------------------------------------------------------------------------
    def check_recipe(self, recipe: "Recipe", ctx: "Context") -> None:
        """Family-specific checks of a loaded recipe (model names, overrides, options); raise `ctx.fail(path, ...)`."""

    def check_plan(self, recipe: "Recipe", budget_name: str, model: nn.Module) -> None:
        """Checks that need the first stage's (untrained) model, run when a run is planned."""

    def default_budget(self, recipe: "Recipe", data: str) -> str:
        """The budget a run uses when `--budget` is not given: `demo` for built-in data, else `paper`, else the first."""
        want = "demo" if all(self.is_builtin_data(p) for p in data.split(",") if p.strip()) else "paper"
        return want if want in recipe.budgets else next(iter(recipe.budgets))

    def is_builtin_data(self, part: str) -> bool:
        """Whether one `--data` part is data the family generates (no download)."""
        return False

    # -- models ----------------------------------------------------------------------------------
    def build(self, stage: "Stage", budget: "Budget") -> nn.Module:
        """A fresh model of a teacher/distill stage: its preset (`stage.model` + the budget's suffix) with the
        budget's and the stage's overrides."""
        raise NotImplementedError

    def load_teacher(self, path: str, stage: "Stage", budget: "Budget", label: Optional[str] = None) -> nn.Module:
        """`--teacher PATH` (or a shipped teacher) as the result of the teacher stage; `label` names it in errors."""
        from distilkit import io as dio

        where = f"--teacher {path}" if label is None or label == path else f"teacher {label} ({path})"
        try:
            return dio.load(path)
        except DistilkitError as err:
            raise DistilkitError(f"{where}: {err}") from None

    def example_inputs(self, budget: "Budget", batch: int = 1, device: str = "cpu") -> tuple[torch.Tensor, ...]:
        """Inputs of one forward at the budget's sizes (profiling, latency, width pruning's graph)."""
        raise NotImplementedError

    def describe(self, model: nn.Module) -> dict[str, Any]:
        """Architecture facts for plans and reports; at least `depth` and `mlp_ratio`."""
        raise NotImplementedError

    def architecture(self, row: dict[str, Any]) -> str:
        """A short label of what `describe` found beyond depth and width (the plan's `model` column)."""
        return ""

    def is_backbone(self, name: str) -> bool:
        """Whether parameter `name` belongs to the backbone (copied by `init: backbone`, trained at the backbone LR)."""
        return name.startswith("backbone.")

    def init_student(self, student: nn.Module, previous: nn.Module) -> set[str]:
        """`init: backbone` of a distill stage: copy every backbone tensor of `previous` whose name and shape match."""
        source = {k: v for k, v in previous.state_dict().items() if self.is_backbone(k)}
        target = student.state_dict()
        copied = {k: source[k] for k in target if k in source and source[k].shape == target[k].shape}
        student.load_state_dict(copied, strict=False)
        return set(copied)

    def set_drop_path(self, model: nn.Module, rate: float) -> None:
        """Stochastic depth of a trained stage's blocks (0 at the first block, `rate` at the last)."""
        if rate:
            raise DistilkitError(f"the {self.name} family does not implement drop_path; set the budget's drop_path to 0")

    def load_backbone(self, model: nn.Module, path: str) -> tuple[set[str], list[str], list[str]]:
        """`--init-backbone PATH` into `model`: (loaded state names, missing, unexpected)."""
        raise DistilkitError(f"--init-backbone: the {self.name} family cannot start from a backbone checkpoint")

    def loss_problem(self, weights: dict[str, float], student: nn.Module) -> Optional[tuple[str, str]]:
        """(loss, why) for a weighted loss part this stage's student cannot serve, or None (checked when planning)."""
        return None

    def setup_extra_stage(self, stage: "Stage", budget: "Budget", previous: nn.Module, device: str) -> StageSetup:
        """The student, teacher and frozen parts of a stage of one of `extra_stage_kinds`."""
        raise DistilkitError(f"the {self.name} family has no {stage.kind!r} stages")

    def forward(self, model: nn.Module, batch: dict[str, Any], outputs: frozenset[str]) -> dict[str, Any]:
        """`model` on a training batch → its outputs (a dict the loss parts read), with the extra `outputs` asked for."""
        raise NotImplementedError

    # -- data ------------------------------------------------------------------------------------
    def datasets(self, spec: str, budget: "Budget", split: str) -> list[Any]:
        """The datasets of a `--data` (split "train") or `--eval-data` (split "test") spec, checked before training."""
        raise NotImplementedError

    def default_eval_set(self, budget: "Budget") -> Any:
        """What a run evaluates on without `--eval-data`: the held-out split of the family's built-in data."""
        raise NotImplementedError

    def check_training_data(self, datasets: list[Any], budget: "Budget", route: list["Stage"]) -> None:
        """Checks of the training data that the stages of the run (`route`) need, before anything trains."""

    def training_set(self, stage: "Stage", budget: "Budget", datasets: list[Any], seed: int) -> Any:
        """The map-style dataset of training batches (dicts of tensors) a stage trains on; `set_epoch` is honoured."""
        raise NotImplementedError

    # -- evaluation and report ------------------------------------------------------------------
    def evaluate(self, model: nn.Module, budget: "Budget", eval_set: Any, out_dir: str, name: str, log: "RunLog",
                 device: str) -> dict[str, Any]:
        """Accuracy figures (every key of `metrics`) and any speed the family measures itself, for the report row."""
        raise NotImplementedError

    def baselines(self, out: str, eval_set: Any, log: "RunLog") -> list[dict[str, Any]]:
        """Reference rows for the report (`name`, every metric, optional `fps`)."""
        return []

    def budget_lines(self, budget: "Budget") -> list[str]:
        """Lines of the run's announcement about the family's budget settings (input sizes, augmentation)."""
        return []

    def report_columns(self) -> list[ReportColumn]:
        """Columns of the report table between the generic size/speed columns and the metrics."""
        return []

    def report_notes(self, report: dict[str, Any]) -> list[str]:
        """Paragraphs after the report table (e.g. what a column means)."""
        return []

    def eval_command(self, recipe: str, budget_name: str, eval_data: Optional[str], model_dir: str) -> Optional[str]:
        """The command that evaluates the final model again on the report's data, or None."""
        return None
