"""The recipe format: a route of stages (what to train, from what, with which losses) and budgets (how big/long).

A recipe YAML has `name`, `description`, `stages` (ordered; each distils from the previous one's
result) and `budgets` (named sets of sizes, epochs and optimiser settings, e.g. `demo`, `paper`).
`load_recipe` validates it completely before anything runs.
"""

from __future__ import annotations

import inspect
import math
import os
import re
import typing
from collections.abc import Collection
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal, Optional

from distilkit.data.synthetic import DEMO_IMAGE_SIZE, DEMO_LENGTH, DEMO_TEST_SEQUENCES, DEMO_TRAIN_SEQUENCES
from distilkit.errors import DistilkitError
from distilkit.limits import (MAX_BATCH, MAX_BRIGHTNESS, MAX_CENTER_JITTER, MAX_CLASSES, MAX_CONTEXT, MAX_CROP,
                              MAX_EPOCHS, MAX_GAP, MAX_IMAGE_INPUT, MAX_IMAGE_SIDE, MAX_LAYERS, MAX_LENGTH, MAX_LR, MAX_MLP_RATIO,
                              MAX_MODEL_PARAMS, MAX_RECIPE_CHARS, MAX_SAMPLES, MAX_SCALE, MAX_SCALE_JITTER, MAX_SEQUENCES,
                              MAX_STEPS, MAX_TEMPLATES, MAX_THREADS, MAX_WEIGHT, MAX_WIDTH, MAX_WORKERS,
                              MIN_IMAGE_SIDE)
from distilkit.names import PLAIN_NAME_RULE, is_plain_name, plain_name_problem
from distilkit.recipes.teachers import shipped_teacher_names
from distilkit.recipes.validate import Context, Path, build, coerce
from distilkit.recipes.yamlnodes import load_with_lines

#: Stage names: ASCII letters, digits, '-' and '_' (they name the stage folders of a run).
_STAGE_NAME = re.compile(r"[A-Za-z0-9_-]+")

StageKind = Literal["teacher", "distill", "depth", "width", "score"]

def _losses_of(kind: str) -> frozenset[str]:
    """The loss parts a stage kind accepts (`distilkit.recipes.losses.LOSS_PARTS`, the one registry of them)."""
    from distilkit.recipes.losses import LOSSES_BY_KIND

    return LOSSES_BY_KIND[kind]


@dataclass(frozen=True)
class Bound:
    """The range a numeric recipe value must lie in; NaN and infinities never do."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def problem(self, value: float) -> Optional[str]:
        """Why `value` is outside the range (as "must be ..., got ..."), or None; names the side crossed."""
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        if math.isfinite(value) and above and below:
            return None
        if math.isnan(value) or (above and below):  # NaN, or an infinity on an open-ended side
            side = str(self)
        elif not above:
            side = self._low_side()
        else:
            side = self._high_side()
        return f"must be {side}, got {value!r}"

    def _low_side(self) -> str:
        return f"{'>' if self.low_open else '>='} {_number(self.low)}"

    def _high_side(self) -> str:
        return f"{'<' if self.high_open else '<='} {_number(self.high)}"

    def __str__(self) -> str:
        if math.isinf(self.low) and math.isinf(self.high):
            return "a finite number"
        if math.isinf(self.high):
            return self._low_side()
        if math.isinf(self.low):
            return self._high_side()
        return f"in {'(' if self.low_open else '['}{_number(self.low)}, {_number(self.high)}{')' if self.high_open else ']'}"


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


#: The ranges recipe numbers must lie in; the caps are distilkit.limits'.
FINITE, POSITIVE = Bound(), Bound(0.0, low_open=True)
FRACTION, PROBABILITY = Bound(0.0, 1.0, low_open=True), Bound(0.0, 1.0, high_open=True)
LOSS_WEIGHT, EPOCHS, LAYERS = Bound(0.0, MAX_WEIGHT), Bound(1.0, MAX_EPOCHS), Bound(1.0, MAX_LAYERS)
LR, SCALE, STEPS = Bound(0.0, MAX_LR, low_open=True), Bound(0.0, MAX_SCALE), Bound(0.0, MAX_STEPS)
SAMPLES, THREADS, MLP_RATIO = Bound(1.0, MAX_SAMPLES), Bound(1.0, MAX_THREADS), Bound(0.0, MAX_MLP_RATIO, low_open=True)


def bounds_problem(obj: Any, bounds: dict[str, Bound]) -> Optional[tuple[str, str]]:
    """(field, why) for the first field of `obj` outside its bound (fields left None are skipped), or None."""
    for key, bound in bounds.items():
        value = getattr(obj, key)
        problem = None if value is None else bound.problem(value)
        if problem:
            return key, problem
    return None


@dataclass
class ScheduleSpec:
    """Shape of the γ decay used by depth/width pruning; its length `m` comes from the budget."""

    kind: Literal["cosine", "linear", "step"] = "cosine"
    offset: float = 0.0
    steps: int = 1

    def check(self) -> Optional[tuple[str, str]]:
        return bounds_problem(self, {"offset": Bound(-MAX_EPOCHS, MAX_EPOCHS), "steps": EPOCHS})


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
    freeze_removed: Optional[bool] = None  # depth stages: freeze the fading blocks (None = yes, as the official code)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    mlp_ratio: Optional[float] = None
    importance: Literal["l2", "l1"] = "l2"
    feature_pairs: list[list[int]] = field(default_factory=list)
    attention_layers: int = 4

    def check(self) -> Optional[tuple[str, str]]:
        problem = loss_weights_problem(self.losses, _losses_of(self.kind), f"a {self.kind} stage")
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
            if self.remove is not None and (not self.remove or not _layer_indices(self.remove)
                                            or len(set(self.remove)) != len(self.remove)):
                return "remove", f"must be distinct layer indices in [0, {MAX_LAYERS - 1}]"
        elif self.remove is not None or self.keep is not None:
            return "remove" if self.remove is not None else "keep", "only depth stages remove layers"
        elif self.freeze_removed is not None:
            return "freeze_removed", "only depth stages remove (and freeze) layers"
        if self.keep is not None and self.keep < 1:
            return "keep", f"a depth stage keeps at least one layer, got {self.keep}"
        if self.keep is not None and LAYERS.problem(self.keep):
            return "keep", LAYERS.problem(self.keep)
        if self.kind == "width" and (self.mlp_ratio is None or POSITIVE.problem(self.mlp_ratio)):
            return "mlp_ratio", "a width stage needs a positive target 'mlp_ratio'"
        if self.kind != "width" and self.mlp_ratio is not None:
            return "mlp_ratio", "only width stages change the MLP ratio"
        if self.mlp_ratio is not None and MLP_RATIO.problem(self.mlp_ratio):
            return "mlp_ratio", MLP_RATIO.problem(self.mlp_ratio)
        if ("feature" in self.losses) != bool(self.feature_pairs):
            return "feature_pairs", "the 'feature' loss and 'feature_pairs' ([student, teacher] layer pairs) go together"
        for pair in self.feature_pairs:
            if len(pair) != 2 or not _layer_indices(pair):
                return "feature_pairs", f"each pair is [student_layer, teacher_layer] (in [0, {MAX_LAYERS - 1}]), got {pair}"
        if self.attention_layers < 1:
            return "attention_layers", f"the 'attn' loss needs at least the last block, got {self.attention_layers}"
        if LAYERS.problem(self.attention_layers):
            return "attention_layers", LAYERS.problem(self.attention_layers)
        return None


def _layer_indices(indices: list[int]) -> bool:
    """Whether every entry is a layer index a model can have: 0 to MAX_LAYERS - 1."""
    return all(0 <= i < MAX_LAYERS for i in indices)


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
        return bounds_problem(self, {"lr": LR, "backbone_lr_scale": SCALE, "weight_decay": Bound(0.0, MAX_LR),
                                     "grad_clip": Bound(0.0, MAX_WEIGHT), "warmup_steps": STEPS,
                                     "lr_drop_at": FRACTION, "lr_drop_factor": SCALE})


@dataclass
class StageBudget:
    """Per-stage length and optional overrides of the budget-wide settings. `losses` adds or re-weights
    loss parts of the stage for this budget only (weight 0 drops one)."""

    epochs: int
    m: Optional[float] = None
    samples_per_epoch: Optional[int] = None
    lr: Optional[float] = None
    lr_drop_at: Optional[float] = None  # fraction of the stage; default: the budget optimizer's
    backbone_lr_scale: Optional[float] = None
    losses: dict[str, float] = field(default_factory=dict)

    def check(self) -> Optional[tuple[str, str]]:
        problem = bounds_problem(self, {"epochs": EPOCHS, "m": Bound(0.0, MAX_EPOCHS), "samples_per_epoch": SAMPLES,
                                        "lr": LR, "lr_drop_at": FRACTION, "backbone_lr_scale": SCALE})
        if problem:
            return problem
        problem = loss_weights_problem(self.losses)  # names are checked per stage kind in _check_route
        return ("losses", problem) if problem else None


def loss_weights_problem(losses: dict[str, float], allowed: Optional[Collection[str]] = None,
                         owner: str = "") -> Optional[str]:
    """What is wrong with a {loss: weight} mapping (a name outside `allowed`, a negative or non-finite weight), or None."""
    for loss, weight in losses.items():
        if allowed is not None and loss not in allowed:
            return f"unknown loss {loss!r} for {owner}; expected some of {sorted(allowed)}"
        problem = LOSS_WEIGHT.problem(weight)
        if problem:
            return f"loss weight for {loss!r} {problem}"
    return None


def effective_losses(stage: Stage, entry: StageBudget) -> dict[str, float]:
    """The stage's loss weights with the budget's additions and changes applied, zero weights dropped."""
    merged = {**stage.losses, **entry.losses}
    return {k: float(v) for k, v in merged.items() if v != 0}


@dataclass
class SyntheticSpec:
    """Size of the built-in synthetic tracking data (`--data synthetic` and the default test split); the defaults
    are the demo splits (distilkit.data.synthetic.DEMO_*)."""

    train_sequences: int = DEMO_TRAIN_SEQUENCES
    test_sequences: int = DEMO_TEST_SEQUENCES
    length: int = DEMO_LENGTH
    image_size: list[int] = field(default_factory=lambda: list(DEMO_IMAGE_SIZE))

    def check(self) -> Optional[tuple[str, str]]:
        if len(self.image_size) != 2 or not all(MIN_IMAGE_SIDE <= v <= MAX_IMAGE_SIDE for v in self.image_size):
            return "image_size", f"is [width, height] in pixels, each in [{MIN_IMAGE_SIDE}, {MAX_IMAGE_SIDE}]"
        return bounds_problem(self, {"train_sequences": Bound(1.0, MAX_SEQUENCES), "test_sequences": Bound(1.0, MAX_SEQUENCES),
                                     "length": Bound(2.0, MAX_LENGTH)})


@dataclass
class AugmentSpec:
    """Training-pair augmentation (`distilkit.data.augment.Augment`, as the official pipeline): probability of a
    grayscale pair, brightness jitter and flip probability per crop; 0 turns each off."""

    grayscale: float = 0.0
    brightness: float = 0.0
    flip: float = 0.0

    def check(self) -> Optional[tuple[str, str]]:
        return bounds_problem(self, {"grayscale": Bound(0.0, 1.0), "brightness": Bound(0.0, MAX_BRIGHTNESS),
                                     "flip": Bound(0.0, 1.0)})


@dataclass
class EvalSpec:
    """Evaluation settings: tracker options and CPU latency measurement."""

    latency_threads: Optional[int] = None
    search_factor: Optional[float] = None  # the factor the tracker crops with; default: the budget's (training) one
    tracker: dict[str, Any] = field(default_factory=dict)  # MixFormerV2Tracker options, checked in _check_models

    def check(self) -> Optional[tuple[str, str]]:
        return bounds_problem(self, {"latency_threads": THREADS, "search_factor": Bound(0.0, MAX_CONTEXT, low_open=True)})


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
    dataset_weights: Literal["equal", "sequences"] = "sequences"  # datasets drawn 1:1 (official) or by sequence count
    batch_size: int = 32
    samples_per_epoch: int = 60000
    workers: int = 4
    threads: Optional[int] = None
    checkpoint_every: int = 0
    deterministic: bool = False
    amp: Literal["none", "bf16", "fp16"] = "none"  # CUDA autocast in training stages (fp16 with loss scaling)
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    drop_path: float = 0.0  # stochastic depth of every trained stage's backbone (0 at the first block, this at the last)
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    synthetic: SyntheticSpec = field(default_factory=SyntheticSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    teacher: Optional[str] = None  # a shipped teacher the route starts from unless --teacher is given

    def check(self) -> Optional[tuple[str, str]]:
        if self.teacher is not None and self.teacher not in shipped_teacher_names():
            return "teacher", f"names a shipped teacher ({', '.join(shipped_teacher_names()) or 'none shipped'})"
        crop, context = Bound(1.0, MAX_CROP), Bound(0.0, MAX_CONTEXT, low_open=True)
        return bounds_problem(self, {
            "template_size": crop, "search_size": crop, "template_factor": context, "search_factor": context,
            "center_jitter": Bound(0.0, MAX_CENTER_JITTER), "scale_jitter": Bound(0.0, MAX_SCALE_JITTER),
            "max_gap": Bound(0.0, MAX_GAP), "negative_prob": PROBABILITY, "batch_size": Bound(1.0, MAX_BATCH),
            "samples_per_epoch": SAMPLES, "workers": Bound(0.0, MAX_WORKERS), "threads": THREADS,
            "checkpoint_every": STEPS, "drop_path": Bound(0.0, 1.0, high_open=True),
        })

    def stage(self, name: str) -> StageBudget:
        return self.stages[name]

    @property
    def tracking_search_factor(self) -> float:
        """The search factor trackers crop with (`eval.search_factor`, else the training `search_factor`)."""
        return self.search_factor if self.eval.search_factor is None else self.eval.search_factor


@dataclass
class Recipe:
    """A validated recipe. `source` is the file it came from, `lines` the line of every key in it."""

    name: str
    description: str
    stages: list[Stage]
    budgets: dict[str, Budget]
    source: str = ""
    lines: dict[Path, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def fail(self, path: Path, message: str) -> DistilkitError:
        """An error at key `path` (e.g. ("stages", 2, "remove")) naming the recipe file, line and key."""
        return Context(self.source, self.lines).fail(path, message)

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
        raise DistilkitError(f"unknown recipe {name_or_path!r}; shipped recipes: {', '.join(shipped_recipes())} (or give a path "
                             "to a YAML file)")
    return path


def is_stage_name(name: object) -> bool:
    """Stage names name directories: plain names (distilkit.names) of ASCII letters, digits, '-' and '_' only."""
    return is_plain_name(name) and _STAGE_NAME.fullmatch(name) is not None  # type: ignore[arg-type]


def load_recipe(name_or_path: str) -> Recipe:
    """Load and fully validate a recipe; errors name the file, line and key."""
    path = resolve_recipe_path(name_or_path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_RECIPE_CHARS + 1)
    except OSError as err:
        raise DistilkitError(f"cannot read recipe {path}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        line = err.object[: err.start].count(b"\n") + 1
        raise DistilkitError(f"{path}:{line}: not UTF-8 text (byte 0x{err.object[err.start]:02x}); "
                             "save the recipe as UTF-8") from None
    if len(text) > MAX_RECIPE_CHARS:
        raise DistilkitError(f"{path}: longer than {MAX_RECIPE_CHARS:,} characters: not a recipe")
    value, lines = load_with_lines(text, path)
    ctx = Context(path, lines)
    recipe: Recipe = build(Recipe, value, ctx)
    recipe.source, recipe.lines = path, lines
    _check_route(recipe, ctx)
    _check_models(recipe, ctx)
    return recipe


def _check_route(recipe: Recipe, ctx: Context) -> None:
    """Cross-field rules: stage order, unique names, every budget covering every stage."""
    problem = plain_name_problem(recipe.name)
    if problem:  # it names the default output folder runs/<name>
        raise ctx.fail(("name",), f"must be {PLAIN_NAME_RULE}, as it names the output folder runs/<name>; it {problem}")
    if not recipe.stages:
        raise ctx.fail(("stages",), "a recipe needs at least one stage")
    names = [s.name for s in recipe.stages]
    for i, stage in enumerate(recipe.stages):
        if names.index(stage.name) != i:
            raise ctx.fail(("stages", i, "name"), f"duplicate stage name {stage.name!r}")
        if not is_stage_name(stage.name):
            raise ctx.fail(("stages", i, "name"), "stage names may use ASCII letters, digits, '-' and '_' only (they name "
                                                  "directories)")
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
                problem = loss_weights_problem({loss: weight}, _losses_of(stage.kind),
                                               f"the {stage.kind} stage {stage.name!r}")
                if problem:
                    raise ctx.fail(("budgets", bname, "stages", stage.name, "losses", loss), problem)
            losses = effective_losses(stage, entry)
            if not losses:
                raise ctx.fail(("budgets", bname, "stages", stage.name, "losses"), f"stage {stage.name!r} is left without any "
                                                                                   "loss")
            if "feature" in losses and not stage.feature_pairs:
                raise ctx.fail(("budgets", bname, "stages", stage.name, "losses", "feature"),
                               f"the 'feature' loss needs 'feature_pairs' on stage {stage.name!r}")
            if stage.kind in ("depth", "width"):
                if entry.m is None:
                    raise ctx.fail(("budgets", bname, "stages", stage.name), f"missing 'm' (epochs over which the {stage.kind} "
                                                                             "pruning fades out)")
                if entry.m - stage.schedule.offset > entry.epochs:
                    raise ctx.fail(("budgets", bname, "stages", stage.name, "m"),
                                   f"m = {entry.m:g} (offset {stage.schedule.offset:g}) exceeds the stage's {entry.epochs} "
                                   "epochs: "
                                   "the pruned parts must be gone before the stage ends")


#: Caps on the MixFormerV2Config values a recipe overrides (the config checks their lower bounds itself).
_CONFIG_CAPS = {"embed_dim": MAX_WIDTH, "depth": MAX_LAYERS, "num_heads": MAX_WIDTH, "mlp_ratio": MAX_MLP_RATIO,
                "mlp_hidden": MAX_WIDTH, "patch_size": MAX_CROP, "template_size": MAX_CROP, "search_size": MAX_CROP,
                "num_online_templates": MAX_TEMPLATES, "norm_eps": 1.0, "bins": MAX_WIDTH, "head_hidden": MAX_WIDTH,
                "corner_channel": MAX_WIDTH, "search_factor": MAX_CONTEXT, "legacy_num_classes": MAX_CLASSES,
                "legacy_img_size": MAX_IMAGE_INPUT, "drop_path_rate": 1.0}  # drop_path_rate: refused, the budget's drop_path

#: MixFormerV2Tracker arguments the runner sets itself (from the stage model and the budget's crops).
_TRACKER_SET_BY_RUNNER = frozenset({"self", "model", "template_factor", "search_factor", "template_size", "search_size",
                                    "device", "online_update"})  # reports evaluate with and without updates


def _check_models(recipe: Recipe, ctx: Context) -> None:
    """Model names, config overrides and tracker options against distilkit.trackers.mixformerv2, for every
    budget (imports torch, so it runs after the cheap checks)."""
    from distilkit.recipes.models import stage_config
    from distilkit.trackers.mixformerv2 import PRESETS, MixFormerV2Config

    fields = typing.get_type_hints(MixFormerV2Config)
    for i, stage in enumerate(recipe.stages):
        stage.overrides = _typed_options(stage.overrides, fields, ctx, ("stages", i, "overrides"), "MixFormerV2Config field",
                                         _CONFIG_CAPS)
        _no_drop_path_override(stage.overrides, ctx, ("stages", i, "overrides"))
        if stage.model is not None and stage.model not in PRESETS:
            raise ctx.fail(("stages", i, "model"), f"unknown model {stage.model!r}; expected one of {sorted(PRESETS)}")
    for bname, budget in recipe.budgets.items():
        budget.model_overrides = _typed_options(budget.model_overrides, fields, ctx, ("budgets", bname, "model_overrides"),
                                                "MixFormerV2Config field", _CONFIG_CAPS)
        _no_drop_path_override(budget.model_overrides, ctx, ("budgets", bname, "model_overrides"))
        _check_tracker_options(budget, ctx, ("budgets", bname, "eval", "tracker"))
        for i, stage in enumerate(recipe.stages):
            if stage.model is None:
                continue
            if stage.model + budget.model_suffix not in PRESETS:
                raise ctx.fail(("budgets", bname, "model_suffix"),
                               f"no model {stage.model + budget.model_suffix!r} for stage {stage.name!r}; models: "
                               f"{sorted(PRESETS)}")
            try:
                problem = _model_size_problem(stage_config(stage, budget))
            except DistilkitError as err:
                problem = str(err)
            if problem:
                raise ctx.fail(("stages", i, "model"), f"budget {bname!r}: {problem}")


def _no_drop_path_override(overrides: dict[str, Any], ctx: Context, path: Path) -> None:
    """Stochastic depth has one knob, the budget's `drop_path` (the runner sets it on every trained stage's model)."""
    if "drop_path_rate" in overrides:
        raise ctx.fail(path + ("drop_path_rate",), "set stochastic depth with the budget's 'drop_path' "
                                                  "(it applies to every trained stage)")


def _check_tracker_options(budget: Budget, ctx: Context, path: Path) -> None:
    """`eval.tracker` keys and value types against MixFormerV2Tracker's signature (its value ranges are
    checked when the run is planned, by building one)."""
    from distilkit.trackers.mixformerv2 import MixFormerV2Tracker

    names = set(inspect.signature(MixFormerV2Tracker.__init__).parameters) - _TRACKER_SET_BY_RUNNER
    hints = {k: v for k, v in typing.get_type_hints(MixFormerV2Tracker.__init__).items() if k in names}
    budget.eval.tracker = _typed_options(budget.eval.tracker, hints, ctx, path, "MixFormerV2Tracker option")


def _typed_options(options: dict[str, Any], types: dict[str, Any], ctx: Context, path: Path, what: str,
                   caps: Optional[dict[str, float]] = None) -> dict[str, Any]:
    """`options` checked against `types` (name → type): known keys, values of their type, finite numbers
    (each number, or each number of a list, at most `caps[key]` when given); ints become floats where
    floats are due."""
    out = {}
    for key, value in options.items():
        if key not in types:
            raise ctx.fail(path + (key,), f"unknown {what}; expected one of {sorted(types)}")
        out[key] = coerce(types[key], value, ctx, path + (key,))
        problem = FINITE.problem(out[key]) if isinstance(out[key], float) else None
        cap = (caps or {}).get(key, math.inf)
        over = [n for n in (out[key] if isinstance(out[key], list) else [out[key]])
                if isinstance(n, (int, float)) and not isinstance(n, bool) and n > cap]
        if over and not problem:
            problem = f"must be <= {_number(cap)}, got {over[0]!r}"
        if problem:
            raise ctx.fail(path + (key,), problem)
    return out


def _model_size_problem(config: Any) -> Optional[str]:
    """Why a MixFormerV2Config describes an absurdly large model (parameters counted roughly from the config,
    before anything is built: attention 4·D² and MLP 2·D·hidden per block), or None."""
    hidden = max(config.mlp_hidden) if config.mlp_hidden else int(config.embed_dim * config.mlp_ratio)
    params = config.depth * (4 * config.embed_dim**2 + 2 * config.embed_dim * hidden)
    if params > MAX_MODEL_PARAMS:
        return f"its backbone has about {params:,} parameters, more than the {MAX_MODEL_PARAMS:,} allowed"
    return None
