"""The recipe format: a route of stages (what to train, from what, with which losses) and budgets (how big/long).

A recipe YAML has `name`, `description`, `stages` (ordered; each distils from the previous one's
result) and `budgets` (named sets of sizes, epochs and optimiser settings, e.g. `demo`, `paper`).
`load_recipe` validates it completely before anything runs.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal, Optional

from distilkit.errors import DistilkitError
from distilkit.recipes.validate import Context, build
from distilkit.recipes.yamlnodes import load_with_lines

StageKind = Literal["teacher", "distill", "depth", "width", "score"]

#: Loss parts each stage kind understands (weights are given per stage in the recipe).
LOSSES_BY_KIND: dict[str, frozenset[str]] = {
    "teacher": frozenset({"l1", "giou", "ciou"}),
    "distill": frozenset({"kl", "l1", "giou", "ciou", "feature", "attn"}),
    "depth": frozenset({"kl", "l1", "giou", "ciou", "feature", "attn"}),
    "width": frozenset({"kl", "l1", "giou", "ciou", "feature", "attn"}),
    "score": frozenset({"bce"}),
}


@dataclass
class ScheduleSpec:
    """Shape of the γ decay used by depth/width pruning; its length `m` comes from the budget."""

    kind: Literal["cosine", "linear", "step"] = "cosine"
    offset: float = 0.0
    steps: int = 1


@dataclass
class Stage:
    """One step of the route. `model` names a `distilkit.trackers.mixformerv2` model (teacher/distill kinds);
    the other kinds transform the previous stage's result."""

    name: str
    kind: StageKind
    losses: dict[str, float]
    description: str = ""
    model: Optional[str] = None
    overrides: dict[str, Any] = field(default_factory=dict)
    init: Literal["backbone", "none"] = "backbone"
    remove: Optional[list[int]] = None
    keep: Optional[int] = None
    method: Literal["skip", "first", "last"] = "skip"
    mode: Literal["branch", "block"] = "branch"
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    mlp_ratio: Optional[float] = None
    importance: Literal["l2", "l1"] = "l2"
    feature_pairs: list[list[int]] = field(default_factory=list)
    attention_layers: int = 4

    def check(self) -> Optional[tuple[str, str]]:
        problem = loss_weights_problem(self.losses, LOSSES_BY_KIND[self.kind], f"a {self.kind} stage")
        if problem:
            return "losses", problem
        if not self.losses:
            return "losses", "at least one loss is required"
        if self.kind in ("teacher", "distill") and not self.model:
            return "model", f"a {self.kind} stage needs a model name"
        if self.kind not in ("teacher", "distill") and (self.model or self.overrides):
            key = "model" if self.model else "overrides"
            return key, f"a {self.kind} stage transforms the previous result; {key!r} is not allowed"
        if self.kind == "depth":
            if (self.remove is None) == (self.keep is None):
                return "remove", "a depth stage needs exactly one of 'remove' (layer indices) or 'keep' (layer count)"
            if self.remove is not None and (not self.remove or min(self.remove) < 0 or len(set(self.remove)) != len(self.remove)):
                return "remove", "must be distinct, non-negative layer indices"
        elif self.remove is not None or self.keep is not None:
            return "remove" if self.remove is not None else "keep", "only depth stages remove layers"
        if self.kind == "width" and (self.mlp_ratio is None or self.mlp_ratio <= 0):
            return "mlp_ratio", "a width stage needs a positive target 'mlp_ratio'"
        if self.kind != "width" and self.mlp_ratio is not None:
            return "mlp_ratio", "only width stages change the MLP ratio"
        if ("feature" in self.losses) != bool(self.feature_pairs):
            return "feature_pairs", "the 'feature' loss and 'feature_pairs' ([student, teacher] layer pairs) go together"
        for pair in self.feature_pairs:
            if len(pair) != 2 or min(pair) < 0:
                return "feature_pairs", f"each pair is [student_layer, teacher_layer] (non-negative), got {pair}"
        if self.attention_layers < 1:
            return "attention_layers", f"the 'attn' loss needs at least the last block, got {self.attention_layers}"
        return None


@dataclass
class OptimizerSpec:
    """AdamW with a step learning-rate drop; backbone parameters carried over from an earlier stage get
    `lr · backbone_lr_scale`, heads and newly initialised parameters `lr`."""

    lr: float = 4e-4
    backbone_lr_scale: float = 0.1
    weight_decay: float = 1e-4
    grad_clip: float = 0.1
    warmup_steps: int = 0
    lr_drop_at: float = 0.8
    lr_drop_factor: float = 0.1

    def check(self) -> Optional[tuple[str, str]]:
        if self.lr <= 0:
            return "lr", "must be > 0"
        if not 0.0 < self.lr_drop_at <= 1.0:
            return "lr_drop_at", "is a fraction of the stage's epochs in (0, 1]"
        return None


@dataclass
class StageBudget:
    """Per-stage length and optional overrides of the budget-wide settings. `losses` adds or re-weights
    loss parts of the stage for this budget only (weight 0 drops one)."""

    epochs: int
    m: Optional[float] = None
    samples_per_epoch: Optional[int] = None
    lr: Optional[float] = None
    backbone_lr_scale: Optional[float] = None
    losses: dict[str, float] = field(default_factory=dict)

    def check(self) -> Optional[tuple[str, str]]:
        if self.epochs < 1:
            return "epochs", "must be >= 1"
        if self.m is not None and self.m < 0:
            return "m", "must be >= 0"
        problem = loss_weights_problem(self.losses)  # names are checked per stage kind in _check_route
        return ("losses", problem) if problem else None


def loss_weights_problem(losses: dict[str, float], allowed: Optional[Collection[str]] = None,
                         owner: str = "") -> Optional[str]:
    """What is wrong with a {loss: weight} mapping (a name outside `allowed`, a negative weight), or None."""
    for loss, weight in losses.items():
        if allowed is not None and loss not in allowed:
            return f"unknown loss {loss!r} for {owner}; expected some of {sorted(allowed)}"
        if weight < 0:
            return f"loss weight for {loss!r} must be >= 0, got {weight}"
    return None


def effective_losses(stage: Stage, entry: StageBudget) -> dict[str, float]:
    """The stage's loss weights with the budget's additions and changes applied, zero weights dropped."""
    merged = {**stage.losses, **entry.losses}
    return {k: float(v) for k, v in merged.items() if v != 0}


@dataclass
class SyntheticSpec:
    """Size of the built-in synthetic tracking data (`--data synthetic` and the default test split)."""

    train_sequences: int = 200
    test_sequences: int = 30
    length: int = 100
    image_size: list[int] = field(default_factory=lambda: [320, 240])

    def check(self) -> Optional[tuple[str, str]]:
        if len(self.image_size) != 2 or min(self.image_size) < 64:
            return "image_size", "is [width, height] in pixels, each at least 64"
        if self.train_sequences < 1 or self.test_sequences < 1 or self.length < 2:
            return "", "needs train_sequences, test_sequences >= 1 and length >= 2"
        return None


@dataclass
class EvalSpec:
    """Evaluation settings: tracker options and CPU latency measurement."""

    latency_threads: Optional[int] = None
    tracker: dict[str, Any] = field(default_factory=dict)


@dataclass
class Budget:
    """How big and how long: model variant, crop sizes, data volume, optimiser, per-stage epochs."""

    description: str
    stages: dict[str, StageBudget]
    model_suffix: str = ""
    model_overrides: dict[str, Any] = field(default_factory=dict)
    template_size: int = 128
    search_size: int = 288
    template_factor: float = 2.0
    search_factor: float = 5.0
    center_jitter: float = 4.5
    scale_jitter: float = 0.5
    max_gap: int = 200
    negative_prob: float = 0.5
    batch_size: int = 32
    samples_per_epoch: int = 60000
    workers: int = 4
    threads: Optional[int] = None
    checkpoint_every: int = 0
    deterministic: bool = False
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    synthetic: SyntheticSpec = field(default_factory=SyntheticSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)

    def check(self) -> Optional[tuple[str, str]]:
        for key in ("template_size", "search_size", "batch_size", "samples_per_epoch"):
            if getattr(self, key) < 1:
                return key, "must be >= 1"
        if not 0.0 <= self.negative_prob < 1.0:
            return "negative_prob", "must be in [0, 1)"
        return None

    def stage(self, name: str) -> StageBudget:
        return self.stages[name]


@dataclass
class Recipe:
    """A validated recipe. `source` is the file it came from."""

    name: str
    description: str
    stages: list[Stage]
    budgets: dict[str, Budget]
    source: str = ""

    def budget(self, name: str) -> Budget:
        if name not in self.budgets:
            raise DistilkitError(f"recipe {self.name!r} has no budget {name!r}; it has {sorted(self.budgets)}")
        return self.budgets[name]


def shipped_dir() -> str:
    """Directory of the recipes shipped inside the package."""
    return str(resources.files("distilkit.recipes") / "shipped")


def shipped_recipes() -> list[str]:
    """Names of the shipped recipes (file names without `.yaml`)."""
    return sorted(f[: -len(".yaml")] for f in os.listdir(shipped_dir()) if f.endswith(".yaml"))


def resolve_recipe_path(name_or_path: str) -> str:
    """A shipped recipe name or a path to a YAML file → the file path."""
    if os.path.isfile(name_or_path):
        return name_or_path
    looks_like_path = os.sep in name_or_path or name_or_path.endswith((".yaml", ".yml"))
    if looks_like_path:
        raise DistilkitError(f"recipe file not found: {name_or_path}")
    path = os.path.join(shipped_dir(), name_or_path + ".yaml")
    if not os.path.isfile(path):
        raise DistilkitError(f"unknown recipe {name_or_path!r}; shipped recipes: {', '.join(shipped_recipes())} (or give a path to a YAML file)")
    return path


def is_stage_name(name: object) -> bool:
    """Stage names name directories: letters, digits, '-' and '_' only (so never a path or '..')."""
    return isinstance(name, str) and name.replace("-", "").replace("_", "").isalnum()


def load_recipe(name_or_path: str) -> Recipe:
    """Load and fully validate a recipe; errors name the file, line and key."""
    path = resolve_recipe_path(name_or_path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise DistilkitError(f"cannot read recipe {path}: {err.strerror}") from None
    value, lines = load_with_lines(text, path)
    ctx = Context(path, lines)
    recipe: Recipe = build(Recipe, value, ctx)
    recipe.source = path
    _check_route(recipe, ctx)
    return recipe


def _check_route(recipe: Recipe, ctx: Context) -> None:
    """Cross-field rules: stage order, unique names, every budget covering every stage."""
    if not recipe.stages:
        raise ctx.fail(("stages",), "a recipe needs at least one stage")
    names = [s.name for s in recipe.stages]
    for i, stage in enumerate(recipe.stages):
        if names.index(stage.name) != i:
            raise ctx.fail(("stages", i, "name"), f"duplicate stage name {stage.name!r}")
        if not is_stage_name(stage.name):
            raise ctx.fail(("stages", i, "name"), "stage names may use letters, digits, '-' and '_' only (they name directories)")
        if (i == 0) != (stage.kind == "teacher"):
            raise ctx.fail(("stages", i, "kind"), "the first stage, and only the first, is the 'teacher' stage")
    if not recipe.budgets:
        raise ctx.fail(("budgets",), "a recipe needs at least one budget")
    for bname, budget in recipe.budgets.items():
        for sname in budget.stages:
            if sname not in names:
                raise ctx.fail(("budgets", bname, "stages", sname), f"no stage named {sname!r} in this recipe")
        for i, stage in enumerate(recipe.stages):
            if stage.name not in budget.stages:
                raise ctx.fail(("budgets", bname, "stages"), f"missing entry for stage {stage.name!r}")
            entry = budget.stages[stage.name]
            for loss, weight in entry.losses.items():
                problem = loss_weights_problem({loss: weight}, LOSSES_BY_KIND[stage.kind],
                                               f"the {stage.kind} stage {stage.name!r}")
                if problem:
                    raise ctx.fail(("budgets", bname, "stages", stage.name, "losses", loss), problem)
            losses = effective_losses(stage, entry)
            if not losses:
                raise ctx.fail(("budgets", bname, "stages", stage.name, "losses"), f"stage {stage.name!r} is left without any loss")
            if "feature" in losses and not stage.feature_pairs:
                raise ctx.fail(("budgets", bname, "stages", stage.name, "losses", "feature"),
                               f"the 'feature' loss needs 'feature_pairs' on stage {stage.name!r}")
            if stage.kind in ("depth", "width"):
                if entry.m is None:
                    raise ctx.fail(("budgets", bname, "stages", stage.name), f"missing 'm' (epochs over which the {stage.kind} pruning fades out)")
                if entry.m - stage.schedule.offset > entry.epochs:
                    raise ctx.fail(("budgets", bname, "stages", stage.name, "m"),
                                   f"m = {entry.m:g} (offset {stage.schedule.offset:g}) exceeds the stage's {entry.epochs} epochs: "
                                   "the pruned parts must be gone before the stage ends")
