"""Decay schedules γ(t): 1 → 0 over `m` units of progress, shared by depth and width pruning.

`t` is progress in whatever unit the caller steps (epochs, or fractional epochs for per-iteration
updates). Every schedule is a pure function of `t`, so resuming only needs `t`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Union

from distilkit.checks import as_int, as_number
from distilkit.errors import DistilkitError


def _check(schedule: Any) -> None:
    """Check a schedule's `m` (>= 0) and `offset`: finite numbers, numpy and 0-d torch ones included, which are
    stored as Python floats so that the schedule stays JSON-able (Python ints and floats are kept as given)."""
    for field, minimum in (("m", 0.0), ("offset", None)):
        value = getattr(schedule, field)
        number = as_number(value, f"{type(schedule).__name__}: {field}", minimum=minimum)
        if type(value) not in (int, float):
            object.__setattr__(schedule, field, number)  # frozen dataclass


def _clamped_fraction(t: float, m: float, offset: float) -> float:
    """Fraction of the elimination phase completed at progress `t` (0 before, 1 after)."""
    if m <= 0:
        return 1.0
    return min(max((t + offset) / m, 0.0), 1.0)


@dataclass(frozen=True)
class CosineSchedule:
    """γ = ½(1 + cos(π·min(t + offset, m)/m)): the paper's PMDP schedule.

    `m = 0` removes at once (γ = 0 from the start, the "skip" initialisation).
    Use `CosineSchedule.official(m)` for the official code's epoch convention.
    """

    m: float = 40.0
    offset: float = 0.0

    @classmethod
    def official(cls, m: float = 40.0) -> "CosineSchedule":
        """The official trainer's convention: its epoch counter starts at 1 and adds 1, so with a
        0-based epoch k the argument is k + 2 (γ < 1 in the first epoch, 0 from official epoch m − 1)."""
        return cls(m=m, offset=2.0)

    def __post_init__(self) -> None:
        _check(self)

    def __call__(self, t: float) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * _clamped_fraction(t, self.m, self.offset)))


@dataclass(frozen=True)
class LinearSchedule:
    """γ = 1 − min(t + offset, m)/m."""

    m: float = 40.0
    offset: float = 0.0

    def __post_init__(self) -> None:
        _check(self)

    def __call__(self, t: float) -> float:
        return 1.0 - _clamped_fraction(t, self.m, self.offset)


@dataclass(frozen=True)
class StepSchedule:
    """γ drops in `steps` equal steps over `m` units: 1, 1 − 1/steps, ..., 0 (reached at t = m)."""

    m: float = 40.0
    steps: int = 1
    offset: float = 0.0

    def __post_init__(self) -> None:
        _check(self)
        object.__setattr__(self, "steps", as_int(self.steps, "StepSchedule: steps", minimum=1))  # frozen

    def __call__(self, t: float) -> float:
        done = math.floor(_clamped_fraction(t, self.m, self.offset) * self.steps + 1e-9)
        return 1.0 - done / self.steps


Schedule = Union[CosineSchedule, LinearSchedule, StepSchedule]
_KINDS: dict[str, type] = {"cosine": CosineSchedule, "linear": LinearSchedule, "step": StepSchedule}


def schedule_to_dict(schedule: Schedule) -> dict[str, Any]:
    """A JSON-able description of a schedule (for checkpoints and recipes)."""
    for kind, cls in _KINDS.items():
        if type(schedule) is cls:
            return {"kind": kind, **asdict(schedule)}
    raise DistilkitError(f"unknown schedule type {type(schedule).__name__}")


def schedule_from_dict(spec: dict[str, Any]) -> Schedule:
    """Inverse of `schedule_to_dict`; also accepts recipe entries like {"kind": "cosine", "m": 40}."""
    if not isinstance(spec, dict):
        raise DistilkitError(f"a schedule is a mapping like {{'kind': 'cosine', 'm': 40}}, got {spec!r}")
    spec = dict(spec)
    kind = spec.pop("kind", "cosine")
    if kind not in _KINDS:
        raise DistilkitError(f"unknown schedule kind {kind!r}; expected one of {sorted(_KINDS)}")
    try:
        return _KINDS[kind](**spec)
    except TypeError as err:
        raise DistilkitError(f"bad arguments for {kind} schedule: {err}") from None


UNITS = ("epoch", "iteration")


class ScheduledGamma:
    """What the progressive pruners share: progress t → γ = schedule(t), and the hooks that apply γ.

    t is in epochs: `set_epoch(e)` (0-based) once per epoch, or `step()`; with unit="iteration",
    `step()` advances 1/iters_per_epoch (or one schedule unit if `iters_per_epoch` is None, i.e.
    the schedule's m counts iterations). Subclasses set `_what` (used in messages), call
    `_init_schedule` in their constructor and keep their hook handles in `_handles`.
    """

    _what = "pruning"
    _handles: list

    def remove(self) -> None:
        """Detach the hooks: the model behaves as unpruned again (γ = 1)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _init_schedule(self, schedule: Any, unit: str, iters_per_epoch: int | None) -> None:
        if unit not in UNITS:
            raise DistilkitError(f"unknown {self._what} unit {unit!r}; expected one of {list(UNITS)}")
        if iters_per_epoch is not None:
            if unit != "iteration":
                raise DistilkitError("iters_per_epoch needs unit='iteration'")
            iters_per_epoch = as_int(iters_per_epoch, "iters_per_epoch", minimum=1)
        if not callable(schedule):
            raise DistilkitError(f"schedule must be a callable t -> gamma, got {type(schedule).__name__}")
        self.schedule = schedule
        self.unit = unit
        self.iters_per_epoch = iters_per_epoch
        self._finalized = False
        self.set_progress(0.0)

    @property
    def gamma(self) -> float:
        """Current γ: 1 = untouched, 0 = as after `finalize()`."""
        return self._gamma

    def set_progress(self, t: float) -> float:
        """Set progress in schedule units (fractional epochs for per-iteration updates); returns γ."""
        if self._finalized:
            raise DistilkitError(f"{type(self).__name__} was finalized; its schedule cannot move")
        t = as_number(t, f"{self._what} progress", minimum=0)
        value = self.schedule(t)
        try:
            gamma = as_number(value, "gamma")  # a Python, numpy or 0-d torch number
        except DistilkitError:
            raise DistilkitError(f"{self._what} schedule gave gamma={value!r} at t={t:g}; "
                                 "it must return a finite number") from None
        self.progress = t
        self._gamma = min(max(gamma, 0.0), 1.0)
        return self._gamma

    def set_epoch(self, epoch: int) -> float:
        """Set progress to 0-based epoch `epoch` (call at the start of each epoch); returns γ."""
        if self.unit == "iteration" and self.iters_per_epoch is None:
            raise DistilkitError("set_epoch needs unit='epoch' or iters_per_epoch; use set_progress")
        return self.set_progress(epoch)

    def step(self, n: int = 1) -> float:
        """Advance by `n` units (epochs, or iterations with unit='iteration'); returns γ."""
        per = 1.0 / self.iters_per_epoch if self.iters_per_epoch else 1.0
        return self.set_progress(self.progress + n * per)

    def _schedule_state(self) -> dict[str, Any]:
        """The JSON-able progress part of a pruner's state dict."""
        try:
            spec: dict[str, Any] | None = schedule_to_dict(self.schedule)  # type: ignore[arg-type]
        except DistilkitError:
            spec = None  # a custom callable: cannot be checked on resume
        return {"progress": self.progress, "unit": self.unit, "iters_per_epoch": self.iters_per_epoch, "schedule": spec}

    def _check_resumable(self, state: dict[str, Any], keys: tuple[str, ...]) -> None:
        """Refuse a saved state whose `keys` differ from this pruner's (resuming would change γ or the choice)."""
        if self._finalized:
            raise DistilkitError(f"{type(self).__name__} was finalized; it cannot load a state")
        if state.get("finalized"):
            raise DistilkitError(f"{self._what} state comes from a finalized pruner; load the pruned model instead")
        if "progress" not in state:
            raise DistilkitError(f"{self._what} state lacks 'progress'")
        expected = self.state_dict()  # type: ignore[attr-defined]
        for key in keys + ("unit", "iters_per_epoch", "schedule"):
            saved = state.get(key, expected[key])
            if key == "schedule" and (saved is None or expected[key] is None):
                continue
            if saved != expected[key]:
                raise DistilkitError(f"{self._what} state has {key}={saved!r} but this pruner has {expected[key]!r}")
