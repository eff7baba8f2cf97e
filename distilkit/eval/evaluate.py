"""Run a tracker over sequences, score it, save pytracking-style result files, plot success curves."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from distilkit.atomic import atomic_path, write_atomic
from distilkit.data.sequence import Sequence
from distilkit.errors import DistilkitError
from distilkit.eval.metrics import OVERLAP_THRESHOLDS, SequenceScores, score_sequence, summarize
from distilkit.names import check_plain_name, is_plain_name

# pytracking divides by valid frames only for these datasets; LaSOT-style (invalid = failure) elsewhere
EXCLUDE_INVALID_BY_DATASET = {"got10k": True, "trackingnet": True}
SUMMARY_FILE = "summary.json"


@dataclass
class SequenceResult:
    """A tracker's output on one sequence: boxes (N, 4), scores (N,), seconds per frame (N,), metrics."""

    name: str
    boxes: np.ndarray
    scores: np.ndarray
    times: np.ndarray
    metrics: SequenceScores | None = None


@dataclass
class Results:
    """Per-sequence outputs and figures of one tracker plus the overall summary (pytracking means)."""

    name: str
    sequences: list[SequenceResult] = field(default_factory=list)
    overall: dict[str, float] = field(default_factory=dict)
    success_curve: np.ndarray | None = None  # overall (21,) rates at OVERLAP_THRESHOLDS
    out_dir: Path | None = None

    @property
    def fps(self) -> float:
        times = np.concatenate([s.times for s in self.sequences]) if self.sequences else np.zeros(0)
        return float(len(times) / times.sum()) if times.sum() > 0 else float("nan")

    def summary(self) -> dict[str, Any]:
        return {
            "tracker": self.name,
            "overall": {**self.overall, "fps": self.fps},
            "success_curve": {"thresholds": np.round(OVERLAP_THRESHOLDS, 2).tolist(),
                              "rates": None if self.success_curve is None else self.success_curve.tolist()},
            "sequences": {s.name: {**(s.metrics.summary() if s.metrics else {}),
                                   "fps": float(len(s.times) / s.times.sum()) if s.times.sum() > 0 else None}
                          for s in self.sequences},
        }

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write `<seq>.txt` (x,y,w,h per frame), `<seq>_time.txt` and summary.json into out_dir. Result
        files that an earlier save there listed, for sequences this run does not have, are removed, so the
        folder holds one run (other files are never touched). Every sequence name must be a plain name
        (distilkit.names), so no result file lands outside out_dir; nothing is written otherwise."""
        for s in self.sequences:
            check_plain_name(s.name, "sequence name")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        earlier = _saved_sequences(out / SUMMARY_FILE)
        for s in self.sequences:
            write_atomic(out / f"{s.name}.txt", "".join(",".join(f"{v:.4f}" for v in b) + "\n" for b in s.boxes))
            write_atomic(out / f"{s.name}_time.txt", "".join(f"{t:.6f}\n" for t in s.times))
        write_atomic(out / SUMMARY_FILE, json.dumps(self.summary(), indent=2) + "\n")
        for name in earlier - {s.name for s in self.sequences}:
            for stale in (out / f"{name}.txt", out / f"{name}_time.txt"):
                if stale.is_file():
                    stale.unlink()
        self.out_dir = out
        return out


def _saved_sequences(summary: Path) -> set[str]:
    """Sequence names an earlier summary.json lists (none when there is no readable one); only plain
    names count, so a hand-edited summary cannot point outside its folder."""
    try:
        listed = json.loads(summary.read_text()).get("sequences", {})
    except (OSError, ValueError, AttributeError, RecursionError):  # RecursionError: absurdly nested JSON
        return set()
    if not isinstance(listed, dict):
        return set()
    return {n for n in listed if is_plain_name(n)}


def combine_results(parts: list[Results], name: str | None = None) -> Results:
    """One Results from several runs of the same tracker (e.g. one per dataset), re-summarised."""
    seqs = [s for r in parts for s in r.sequences]
    if not seqs:
        raise DistilkitError("no sequences to combine")
    names = Counter(s.name for s in seqs)
    twice = [n for n, c in names.items() if c > 1]
    if twice:
        raise DistilkitError(f"sequence {twice[0]!r} is in more than one of the results to combine: "
                             "results are saved by sequence name")
    return _summarize_into(Results(name=name or parts[0].name, sequences=seqs))


def _summarize_into(results: Results) -> Results:
    """Overall figures over the sequences that have ground truth (none: result files only)."""
    scores = [s.metrics for s in results.sequences if s.metrics is not None]
    if scores:
        results.overall = summarize(scores)
        results.success_curve = np.mean([s.success for s in scores], axis=0)
    elif all(len(s.boxes) < 2 for s in results.sequences):
        results.overall = {"sequences": 0, "frames": 0,
                           "note": "every sequence has a single frame (the init box): nothing to score"}
    else:
        results.overall = {"sequences": 0, "frames": 0,
                           "note": "no ground truth beyond frame 0 (test split): submit the result files to the server"}
    results.overall["tracked_sequences"] = len(results.sequences)
    return results


def load_results(path: str | os.PathLike) -> Results:
    """Read a results folder written by `Results.save` (its summary.json) for comparison and plots.

    Types are checked here, so a hand-edited or foreign summary is one error naming file and key.
    """
    folder = Path(path)
    file = folder / SUMMARY_FILE if folder.is_dir() else folder
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise DistilkitError(f"no {SUMMARY_FILE} in {folder}: not a distilkit eval results folder") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DistilkitError(f"{file}: not a distilkit eval summary ({err})") from None
    except RecursionError:
        raise DistilkitError(f"{file}: not a distilkit eval summary (nested too deeply)") from None
    name = _summary_field(data, file, "tracker", str, "a string")
    overall = _summary_field(data, file, "overall", dict, "an object")
    for key, value in overall.items():
        if key != "note" and value is not None and not _is_number(value):
            raise DistilkitError(f"{file}: overall.{key} must be a number, got {json.dumps(value)[:40]}")
    curve = _summary_field(data, file, "success_curve", dict, "an object")
    rates = _summary_field(curve, file, "rates", (list, type(None)), "a list or null", "success_curve.")
    return Results(name=name, overall=dict(overall), out_dir=file.parent,
                   success_curve=None if rates is None else _check_rates(rates, file))


def _summary_field(data: Any, file: Path, key: str, kind: type | tuple[type, ...], what: str, prefix: str = "") -> Any:
    """`data[key]`, which must exist and be of `kind` (`what` in words), else an error naming file and key."""
    if not isinstance(data, dict) or key not in data:
        raise DistilkitError(f"{file}: not a distilkit eval summary (no {prefix}{key!r})")
    if not isinstance(data[key], kind):
        raise DistilkitError(f"{file}: {prefix}{key} must be {what}, got {json.dumps(data[key])[:40]}")
    return data[key]


def _is_number(value: Any) -> bool:
    """A JSON number (NaN included: fps may be NaN); True/False are ints in Python but not numbers here."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_rates(rates: list, file: Path) -> np.ndarray:
    """The overall success curve: one finite rate in 0..1 per overlap threshold."""
    if len(rates) != len(OVERLAP_THRESHOLDS) or not all(_is_number(r) and 0 <= r <= 1 for r in rates):
        raise DistilkitError(f"{file}: success_curve.rates must be {len(OVERLAP_THRESHOLDS)} numbers in 0..1 "
                             f"(one per overlap threshold), got {str(rates)[:60]}")
    return np.asarray(rates, dtype=np.float64)


def _sequences(dataset) -> Iterable[Sequence]:
    if isinstance(dataset, Sequence):
        return [dataset]
    return (dataset[i] for i in range(len(dataset)))


def check_unique_names(datasets: list) -> None:
    """Refuse a sequence name that is not a plain name (distilkit.names) or is found twice (in one dataset
    or two): result files and summary entries are keyed by name, so one would land outside the results
    folder or silently overwrite the other. Cheap: readers' `names` are used unloaded."""
    seen: dict[str, int] = {}
    for k, dataset in enumerate(datasets):
        for name in _names(dataset):
            check_plain_name(name, f"{_describe(dataset, k, len(datasets))}: sequence name")
            if name not in seen:
                seen[name] = k
            elif seen[name] == k:
                raise DistilkitError(f"sequence {name!r} appears twice in {_describe(dataset, k, len(datasets))}: "
                                     "results are saved by sequence name")
            else:
                first = _describe(datasets[seen[name]], seen[name], len(datasets))
                raise DistilkitError(f"sequence {name!r} is in both {first} and {_describe(dataset, k, len(datasets))}: "
                                     "results are saved by sequence name, so evaluate them separately")


def _names(dataset) -> list[str]:
    """Sequence names of a dataset or Sequence: a reader's `names` list, else each sequence's name."""
    names = getattr(dataset, "names", None)
    return names if isinstance(names, list) else [s.name for s in _sequences(dataset)]


def _describe(dataset, index: int, count: int) -> str:
    """How a dataset is named in messages: its kind and root when it has them, and its position among several."""
    kind = getattr(dataset, "name", "") if not isinstance(dataset, (Sequence, list)) else ""
    root = getattr(dataset, "root", None)
    label = f"{kind}:{root}" if kind and root is not None else kind or "the sequences"
    return f"dataset {index + 1} ({label})" if count > 1 else label


def evaluate(
    tracker_or_factory: Any,
    dataset,
    out_dir: str | os.PathLike | None = None,
    name: str = "tracker",
    progress: bool = True,
    exclude_invalid: bool | None = None,
) -> Results:
    """Track every sequence of `dataset` (one-pass: initialised on frame 0's gt box), score and save.

    `tracker_or_factory` is an object with `initialize(image, box)` / `track(image) -> (box, score)`
    or a zero-argument callable building one (called once per sequence). Frame 0's prediction is the
    init box (pytracking). `exclude_invalid=None` follows pytracking per dataset: GOT-10k and
    TrackingNet drop invalid frames, LaSOT and synthetic count them as failures.
    """
    make: Callable[[], Any]
    if hasattr(tracker_or_factory, "initialize") and hasattr(tracker_or_factory, "track"):
        make = lambda: tracker_or_factory  # noqa: E731
    elif callable(tracker_or_factory):
        make = tracker_or_factory
    else:
        raise DistilkitError(f"{type(tracker_or_factory).__name__} is neither a tracker (initialize/track) nor a factory")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    check_unique_names([dataset])
    total = len(dataset) if not isinstance(dataset, Sequence) else 1
    results = Results(name=name)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[fps]}"), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task(f"eval {name}", total=total, fps="")
        for seq in _sequences(dataset):
            result = _track_sequence(make(), seq)
            exclude = EXCLUDE_INVALID_BY_DATASET.get(seq.dataset, False) if exclude_invalid is None else exclude_invalid
            if np.isfinite(seq.boxes[1:]).all(1).any():  # test splits (GOT-10k, TrackingNet) have no gt: server-scored
                result.metrics = score_sequence(seq.name, result.boxes, seq.boxes, visible=seq.visible,
                                                exclude_invalid=exclude)
            results.sequences.append(result)
            bar.update(task, advance=1, fps=f"{results.fps:.1f} FPS")
    if not results.sequences:
        raise DistilkitError("the dataset has no sequences to evaluate")
    _summarize_into(results)
    if out_dir is not None:
        results.save(out_dir)
    return results


def _track_sequence(tracker: Any, seq: Sequence) -> SequenceResult:
    n = len(seq)
    boxes = np.zeros((n, 4), dtype=np.float64)
    scores = np.ones(n, dtype=np.float64)
    times = np.zeros(n, dtype=np.float64)
    init = seq.boxes[0]
    if not (np.isfinite(init).all() and init[2] > 0 and init[3] > 0):
        raise DistilkitError(f"sequence {seq.name}: first-frame box {init.tolist()} is not a valid init box")
    image = seq.frame(0)
    start = time.perf_counter()
    try:
        tracker.initialize(image, init.copy())
    except DistilkitError as err:  # say where: which sequence the tracker refused
        raise DistilkitError(f"sequence {seq.name}, frame 0: {err}") from None
    times[0] = time.perf_counter() - start
    boxes[0] = init
    for i in range(1, n):
        image = seq.frame(i)
        start = time.perf_counter()
        try:
            out = tracker.track(image)
        except DistilkitError as err:
            raise DistilkitError(f"sequence {seq.name}, frame {i}: {err}") from None
        times[i] = time.perf_counter() - start
        box, score = out if isinstance(out, tuple) and len(out) == 2 else (out, 1.0)
        box = np.asarray(box, dtype=np.float64).reshape(-1)
        if box.shape != (4,):
            raise DistilkitError(f"tracker returned a box of shape {box.shape} on {seq.name} frame {i}; expected 4 values")
        boxes[i], scores[i] = box, float(score)
    return SequenceResult(seq.name, boxes, scores, times)


def plot_success(results_list: list[Results], path: str | os.PathLike, title: str = "Success plot") -> Path:
    """Success plot (overall curves, legend sorted by AUC as pytracking does) saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [r for r in results_list if r.success_curve is not None]
    if not curves:
        raise DistilkitError("no results with a success curve to plot")
    curves.sort(key=lambda r: -float(r.success_curve.mean()))
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    for r in curves:
        ax.plot(OVERLAP_THRESHOLDS, r.success_curve, linewidth=2, label=f"{r.name} [{100 * r.success_curve.mean():.1f}]")
    ax.set(xlabel="Overlap threshold", ylabel="Success rate", xlim=(0, 1), ylim=(0, 1.0), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    out = Path(path)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return out
