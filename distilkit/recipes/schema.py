"""The recipe format: a route of stages (what to train, from what, with which losses) and budgets (how big/long).

A recipe YAML has `name`, `description`, `stages` (ordered; each distils from the previous one's
result) and `budgets` (named sets of sizes, epochs and optimiser settings, e.g. `demo`, `paper`).
`load_recipe` validates it completely before anything runs.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from collections.abc import Collection
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Callable, Literal, Optional

from distilkit.errors import DistilkitError
from distilkit.limits import (MAX_BATCH, MAX_EPOCHS, MAX_LAYERS, MAX_LR, MAX_MLP_RATIO, MAX_RECIPE_CHARS, MAX_SAMPLES,
                              MAX_SCALE, MAX_STEPS, MAX_THREADS, MAX_WEIGHT, MAX_WORKERS)
from distilkit.names import PLAIN_NAME_RULE, is_plain_name, plain_name_problem
from distilkit.recipes.families import DEFAULT_FAMILY, resolve_family
from distilkit.recipes.family import GENERIC_STAGE_KINDS, ModelFamily
from distilkit.recipes.teachers import shipped_teacher_names
from distilkit.recipes.validate import Context, Path, build, coerce
from distilkit.recipes.yamlnodes import load_with_lines

#: Stage names: ASCII letters, digits, '-' and '_' (they name the stage folders of a run).
_STAGE_NAME = re.compile(r"[A-Za-z0-9_-]+")

#: A stage kind: one of `distilkit.recipes.family.GENERIC_STAGE_KINDS` or of the recipe family's `extra_stage_kinds`.
StageKind = str


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
    """One step of the route. `model` names a preset of the recipe's model family (teacher/distill kinds); the
    other kinds transform the previous stage's result. Loss names and the kind are checked against the family."""

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
        problem = loss_weights_problem(self.losses)  # names are checked against the family in _check_route
        if problem:
            return "losses", problem
        if not self.losses:
            return "losses", "at least one loss is required"
        if self.kind in ("teacher", "distill") and not self.model:
            return "model", f"a {self.kind} stage needs a model name"
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
class EvalSpec:
    """Evaluation settings every family has (CPU latency threads); a family's own `eval:` keys are in its
    budget options' `eval` field (`family_eval`; reading one of them here reads it there)."""

    latency_threads: Optional[int] = None
    family_eval: Any = field(default=None, repr=False)  # set from the budget's options; never a YAML key

    def check(self) -> Optional[tuple[str, str]]:
        return bounds_problem(self, {"latency_threads": THREADS})

    def __getattr__(self, name: str) -> Any:
        family_eval = None if name.startswith("__") or name == "family_eval" else self.family_eval
        if family_eval is None or not hasattr(family_eval, name):
            raise AttributeError(f"'EvalSpec' object has no attribute {name!r} (nor has the family's eval)")
        return getattr(family_eval, name)


@dataclass
class Budget:
    """How big and how long: model variant, data volume, optimiser, per-stage epochs. The family's own settings
    (e.g. a tracker's crop sizes) sit beside these keys in the YAML and are built into `options` (the family's
    `budget_options` dataclass); reading one of them on the budget reads it there."""

    description: str
    stages: dict[str, StageBudget]
    model_suffix: str = ""
    model_overrides: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 32
    samples_per_epoch: int = 60000
    workers: int = 4
    threads: Optional[int] = None
    checkpoint_every: int = 0
    deterministic: bool = False
    amp: Literal["none", "bf16", "fp16"] = "none"  # CUDA autocast in training stages (fp16 with loss scaling)
    drop_path: float = 0.0  # stochastic depth of every trained stage's backbone (0 at the first block, this at the last)
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    teacher: Optional[str] = None  # a shipped teacher the route starts from unless --teacher is given
    options: Any = field(default=None, repr=False)  # the family's budget_options, built beside; never a YAML key

    def check(self) -> Optional[tuple[str, str]]:
        if self.teacher is not None and self.teacher not in shipped_teacher_names():
            return "teacher", f"names a shipped teacher ({', '.join(shipped_teacher_names()) or 'none shipped'})"
        return bounds_problem(self, {
            "batch_size": Bound(1.0, MAX_BATCH), "samples_per_epoch": SAMPLES, "workers": Bound(0.0, MAX_WORKERS),
            "threads": THREADS, "checkpoint_every": STEPS, "drop_path": Bound(0.0, 1.0, high_open=True),
        })

    def stage(self, name: str) -> StageBudget:
        return self.stages[name]

    def replace(self, **changes: Any) -> "Budget":
        """A copy with `changes` applied: generic keys to the budget, the family's to its options (as YAML has them)."""
        own = {f.name for f in dataclasses.fields(self)}
        family = {k: v for k, v in changes.items() if k not in own}
        options = dataclasses.replace(self.options, **family) if family else self.options
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if k in own}, options=options)

    def __getattr__(self, name: str) -> Any:
        options = None if name.startswith("__") or name == "options" else self.options
        if options is None or not hasattr(options, name):
            raise AttributeError(f"'Budget' object has no attribute {name!r} (nor have its family options)")
        return getattr(options, name)


@dataclass
class Recipe:
    """A validated recipe. `source` is the file it came from, `lines` the line of every key in it."""

    name: str
    description: str
    stages: list[Stage]
    budgets: dict[str, Budget]
    family: str = DEFAULT_FAMILY  # the model family (distilkit.recipes.families): a name or 'package.module:Attribute'
    source: str = ""
    lines: dict[Path, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    model_family: ModelFamily = field(default=None, init=False, repr=False, compare=False)  # type: ignore[assignment]

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
    family = _family_of(value, ctx)
    budgets = value.get("budgets") if isinstance(value, dict) else None
    if isinstance(budgets, dict):  # built below with the family's options
        value = {**value, "budgets": {}}
    recipe: Recipe = build(Recipe, value, ctx)
    recipe.source, recipe.lines, recipe.model_family = path, lines, family
    if isinstance(budgets, dict):
        recipe.budgets = {name: _build_budget(raw, recipe.model_family, ctx, ("budgets", name))
                          for name, raw in budgets.items()}
    _check_route(recipe, ctx)
    recipe.model_family.check_recipe(recipe, ctx)
    return recipe


def _family_of(value: Any, ctx: Context) -> Optional[ModelFamily]:
    """The family a recipe mapping names (default: MixFormerV2's), and its stage kinds checked first: the kind
    decides which other stage keys are legal. None when `family` is not text (building the recipe then says so)."""
    name = value.get("family", DEFAULT_FAMILY) if isinstance(value, dict) else DEFAULT_FAMILY
    if not isinstance(name, str):
        return None
    try:
        family = resolve_family(name)
    except DistilkitError as err:
        raise ctx.fail(("family",), str(err)) from None
    kinds = list(GENERIC_STAGE_KINDS) + sorted(family.extra_stage_kinds)
    stages = value.get("stages") if isinstance(value, dict) else None
    for i, stage in enumerate(stages if isinstance(stages, list) else []):
        kind = stage.get("kind") if isinstance(stage, dict) else None
        if isinstance(kind, str) and kind not in kinds:
            raise ctx.fail(("stages", i, "kind"), f"expected one of {kinds}, got {kind!r}")
    return family


def _build_budget(raw: Any, family: ModelFamily, ctx: Context, path: Path) -> Budget:
    """A budget from its YAML mapping: the generic keys into `Budget`, the family's into its `budget_options`."""
    if not isinstance(raw, dict):
        raise ctx.fail(path, f"expected a mapping for Budget, got {'a list' if isinstance(raw, list) else repr(raw)}")
    generic = {f.name for f in dataclasses.fields(Budget) if f.name != "options"}
    own = {f.name for f in dataclasses.fields(family.budget_options) if f.init}
    unknown = [k for k in raw if k not in generic and k not in own]
    if unknown:
        raise ctx.fail(path + (unknown[0],), f"unknown key; expected one of {sorted(generic | own)}")
    family_raw = {k: v for k, v in raw.items() if k in own and k not in generic}
    generic_raw = {k: v for k, v in raw.items() if k in generic}
    eval_raw = raw.get("eval")
    if isinstance(eval_raw, dict):  # `eval:` holds generic keys and (in the family's `eval` field) the family's
        eval_generic = {f.name for f in dataclasses.fields(EvalSpec) if f.name != "family_eval"}
        own_eval = _eval_fields(family)
        unknown = [k for k in eval_raw if k not in eval_generic and k not in own_eval]
        if unknown:
            raise ctx.fail(path + ("eval", unknown[0]), f"unknown key; expected one of {sorted(eval_generic | own_eval)}")
        generic_raw["eval"] = {k: v for k, v in eval_raw.items() if k in eval_generic}
        if "eval" in own:
            family_raw["eval"] = {k: v for k, v in eval_raw.items() if k in own_eval}
    budget: Budget = build(Budget, generic_raw, ctx, path)
    budget.options = build(family.budget_options, family_raw, ctx, path)
    budget.eval.family_eval = getattr(budget.options, "eval", None)
    return budget


def _eval_fields(family: ModelFamily) -> set[str]:
    """The keys of `eval:` the family's budget options take (their `eval` field's dataclass), if any."""
    hints = typing.get_type_hints(family.budget_options)
    tp = hints.get("eval")
    return {f.name for f in dataclasses.fields(tp) if f.init} if tp is not None and dataclasses.is_dataclass(tp) else set()


def _check_route(recipe: Recipe, ctx: Context) -> None:
    """Cross-field rules: stage order, unique names, every budget covering every stage."""
    problem = plain_name_problem(recipe.name)
    if problem:  # it names the default output folder runs/<name>
        raise ctx.fail(("name",), f"must be {PLAIN_NAME_RULE}, as it names the output folder runs/<name>; it {problem}")
    if not recipe.stages:
        raise ctx.fail(("stages",), "a recipe needs at least one stage")
    names = [s.name for s in recipe.stages]
    family = recipe.model_family
    for i, stage in enumerate(recipe.stages):
        if stage.kind not in ("teacher", "distill") and (stage.model or stage.overrides):
            key = "model" if stage.model else "overrides"
            raise ctx.fail(("stages", i, key), f"a {stage.kind} stage transforms the previous result; {key!r} is not allowed")
        problem = loss_weights_problem(stage.losses, losses_of(family, stage.kind), f"a {stage.kind} stage")
        if problem:
            raise ctx.fail(("stages", i, "losses"), problem)
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
                problem = loss_weights_problem({loss: weight}, losses_of(family, stage.kind),
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


def losses_of(family: ModelFamily, kind: str) -> frozenset[str]:
    """The loss parts of `family` a stage of `kind` may weight."""
    return frozenset(name for name, part in family.loss_parts.items() if kind in part.kinds)


def typed_options(options: dict[str, Any], types: dict[str, Any], ctx: Context, path: Path, what: str,
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


def check_model_presets(recipe: Recipe, ctx: Context, presets: Collection[str], types: dict[str, Any], caps: dict[str, float],
                        what: str, model_problem: Callable[[Stage, Budget], Optional[str]]) -> None:
    """A family's model checks: stage and budget overrides typed and capped (`typed_options`; `drop_path_rate` refused:
    the budget's `drop_path` is the one knob), stage models and their budget-suffixed names among `presets`, and
    `model_problem(stage, budget)` (why the model cannot be built, or None) for every teacher/distill stage."""
    for i, stage in enumerate(recipe.stages):
        stage.overrides = typed_options(stage.overrides, types, ctx, ("stages", i, "overrides"), what, caps)
        _no_drop_path_override(stage.overrides, ctx, ("stages", i, "overrides"))
        if stage.model is not None and stage.model not in presets:
            raise ctx.fail(("stages", i, "model"), f"unknown model {stage.model!r}; expected one of {sorted(presets)}")
    for bname, budget in recipe.budgets.items():
        budget.model_overrides = typed_options(budget.model_overrides, types, ctx, ("budgets", bname, "model_overrides"),
                                               what, caps)
        _no_drop_path_override(budget.model_overrides, ctx, ("budgets", bname, "model_overrides"))
        for i, stage in enumerate(recipe.stages):
            if stage.model is None:
                continue
            if stage.model + budget.model_suffix not in presets:
                raise ctx.fail(("budgets", bname, "model_suffix"),
                               f"no model {stage.model + budget.model_suffix!r} for stage {stage.name!r}; models: "
                               f"{sorted(presets)}")
            problem = model_problem(stage, budget)
            if problem:
                raise ctx.fail(("stages", i, "model"), f"budget {bname!r}: {problem}")


def _no_drop_path_override(overrides: dict[str, Any], ctx: Context, path: Path) -> None:
    """Stochastic depth has one knob, the budget's `drop_path` (the runner sets it on every trained stage's model)."""
    if "drop_path_rate" in overrides:
        raise ctx.fail(path + ("drop_path_rate",), "set stochastic depth with the budget's 'drop_path' "
                                                  "(it applies to every trained stage)")

