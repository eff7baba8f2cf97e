"""The run folder of `distilkit prune` (`--out`): what marks it as distilkit's, what `--force` may delete,
temp files of interrupted writes, and whether a stage's files say that it finished.

Layout:
    run.json            what was asked for (recipe, budget, data, seed, ...) and `"format": "distilkit-run/1"`;
                        `--resume` must match it
    .distilkit-run      marks the folder as a distilkit run even when run.json is damaged
    prune.log           everything printed, plus per-step losses
    <stage>/model/      the stage's result (distilkit.io: model.safetensors + arch.json)
    <stage>/metrics.json  written last: a readable one marks the stage finished
    <stage>/checkpoint.safetensors  training state while the stage runs (removed when it finishes)
    <stage>/eval/       per-sequence tracking results (<seq>.txt, <seq>_time.txt, summary.json)
    baseline/           constant-box baseline results (same files)
    report.json, report.md, auc_vs_fps.png

Ownership: a folder is a distilkit run when its run.json carries the format above, or is one written before
the format mark existed (no format, but the recipe, recipe_sha256, stages and version those always held), or
is unreadable or missing while `.distilkit-run` is there (a damaged run: `--force` may start it over).
Any other run.json is another tool's: the folder is never touched. `--force` deletes only files at
distilkit's own paths (eval results: summary.json and <seq>.txt/<seq>_time.txt pairs), and folders it
leaves empty; anything else there is kept and named.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import distilkit
from distilkit.atomic import is_temp_name, remove_stale_temps, write_atomic
from distilkit.errors import DistilkitError
from distilkit.recipes.report import PLOT, REPORT_JSON, REPORT_MD, write_json_atomic
from distilkit.recipes.schema import Recipe, is_stage_name

RUN_FILE, RUN_FORMAT, MARKER, LOG_FILE = "run.json", "distilkit-run/1", ".distilkit-run", "prune.log"
METRICS, MODEL_DIR, EVAL_DIR, BASELINE_DIR = "metrics.json", "model", "eval", "baseline"
NO_UPDATE_EVAL_DIR = "eval-no-update"  # a score-head stage evaluated without online template updates
BASELINE_LABELS = ("constant-box", "csrt", "kcf")  # the reference trackers, one folder each under baseline/
CHECKPOINT, SUMMARY = "checkpoint.safetensors", "summary.json"
_MODEL_FILES = ("model.safetensors", "arch.json")  # what distilkit.io.save writes
_TOP_FILES = (LOG_FILE, REPORT_JSON, REPORT_MD, PLOT, RUN_FILE)  # run.json last: a half-done wipe stays ours
_LEGACY = {"recipe": str, "recipe_sha256": str, "stages": list, "version": str}  # run.json before the format mark
_ROW = ("name", "depth", "mlp_ratio", "params", "macs", "fps", "frame_fps", "auc", "precision", "norm_precision", "seconds")


@dataclass
class Prepared:
    """What `prepare_out_dir` found: whether an earlier run is resumed, and lines worth logging."""

    resumed: bool
    notes: list[str] = field(default_factory=list)


_MAX_RUN_FILE = 1 << 20  # distilkit's run.json is well under 1 KiB: a bigger one is not read whole


def _marked(out: Path) -> bool:
    marker = out / MARKER
    try:
        if marker.is_symlink() or not marker.is_file():
            return False
        with open(marker, "rb") as f:
            return f.read(14) == b"distilkit-run/"
    except OSError:
        return False


def _read_json(path: Path) -> Any:
    """The JSON in `path` (ValueError when it is not JSON or too big for a run.json, OSError when unreadable)."""
    with open(path, "rb") as f:
        data = f.read(_MAX_RUN_FILE + 1)
    if len(data) > _MAX_RUN_FILE:
        raise ValueError(f"over {_MAX_RUN_FILE >> 20} MiB")
    return json.loads(data.decode("utf-8"))


def read_record(out: Path) -> tuple[Optional[dict[str, Any]], str]:
    """run.json of the distilkit run in `out`, or (None, why) for a damaged one (unreadable or missing
    beside the marker). A folder that is not provably a distilkit run is a DistilkitError."""
    run_file = out / RUN_FILE
    if not os.path.lexists(run_file):
        if _marked(out):
            return None, "missing"
        raise DistilkitError(f"output directory {out} exists, is not empty and holds no distilkit run ({RUN_FILE}); "
                             "choose another --out")
    if run_file.is_symlink():
        raise DistilkitError(f"{run_file} is a link, which distilkit never writes; not touching {out} "
                             "(choose another --out)")
    try:
        record = _read_json(run_file)
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError, RecursionError) as err:
        if _marked(out):
            return None, f"unreadable ({err})"
        raise DistilkitError(f"{run_file}: unreadable ({err}) and no {MARKER} marks {out} as a distilkit run; "
                             "not touching it (choose another --out)") from None
    found = record.get("format")
    if found == RUN_FORMAT or (found is None and all(isinstance(record.get(k), t) for k, t in _LEGACY.items())):
        return record, ""
    if isinstance(found, str) and found.startswith("distilkit-run/"):
        raise DistilkitError(f"{run_file}: a run of another distilkit version (format {found!r}, this one reads "
                             f"{RUN_FORMAT!r}); use that version or choose another --out")
    raise DistilkitError(f"{run_file} was not written by distilkit; not touching {out} (choose another --out)")


def write_record(out: str, record: dict[str, Any]) -> None:
    """run.json with distilkit's format mark, then the marker file (so a crash between leaves run.json marked)."""
    write_json_atomic(os.path.join(out, RUN_FILE), {"format": RUN_FORMAT, **record})
    write_atomic(os.path.join(out, MARKER), f"{RUN_FORMAT}\nA distilkit prune run (distilkit {distilkit.__version__}); "
                                            f"see {RUN_FILE}. distilkit prune --force may delete its files.\n")


def prepare_out_dir(out: str, recipe: Recipe, identity: dict[str, Any], resume: bool, force: bool) -> Prepared:
    """Create/check the output directory before a run (rank 0 only).

    A directory holding a run is never reused without `--resume` (same settings) or `--force` (start over,
    deleting only what distilkit wrote). A directory that is not provably a distilkit run is never touched.
    Resuming removes temp files that interrupted writes left in the run's folders.
    """
    from distilkit.io import make_output_dir

    root = make_output_dir(out, f"--out {out}")
    if not set(os.listdir(root)) - {MARKER}:
        return Prepared(False)
    record, damage = read_record(root)
    listed = (record or {}).get("stages", [])
    odd = [n for n in listed if not is_stage_name(n)] if isinstance(listed, list) else [listed]
    if odd:  # a crafted or damaged run.json must not steer deletion outside the run
        raise DistilkitError(f"{root / RUN_FILE}: {odd[0]!r} is not a stage name; not wiping or resuming {out} "
                             "(remove it by hand)")
    stages = set(listed) | {s.name for s in recipe.stages}
    if force:
        kept = wipe(root, stages)
        return Prepared(False, [f"--force kept {len(kept)} item(s) in {out} that distilkit did not write: "
                                + ", ".join(kept[:8]) + (", ..." if len(kept) > 8 else "")] if kept else [])
    if damage:
        raise DistilkitError(f"{root / RUN_FILE}: {damage}; use --force to start over or choose another --out")
    if not resume:
        state = "a finished" if os.path.isfile(root / REPORT_JSON) else "an unfinished"
        raise DistilkitError(
            f"{out} already holds {state} run of {record.get('recipe')!r}; pass --resume to continue it or "
            f"--force to overwrite it (or choose another --out)"
        )
    diffs = [f"{k}: {record.get(k)!r} -> {v!r}" for k, v in identity.items() if record.get(k) != v]
    if diffs:
        raise DistilkitError(f"cannot --resume {out} with different settings ({'; '.join(diffs)}); use --force to start over")
    if record.get("format") != RUN_FORMAT or not _marked(root):  # written before the format mark: mark it now
        write_record(out, {k: v for k, v in record.items() if k != "format"})
    removed = remove_run_temps(root, stages)
    notes = [f"removed {len(removed)} temp file(s) of interrupted writes: " + ", ".join(removed)] if removed else []
    return Prepared(True, notes)


def _run_dirs(root: Path, stages: set[str]) -> list[Path]:
    """The folders distilkit writes into: the run folder, each stage's (and its model and eval) and baseline."""
    dirs = [root, root / BASELINE_DIR, *(root / BASELINE_DIR / label for label in BASELINE_LABELS)]
    for name in sorted(stages):
        if _real_dir(root / name):  # never into a linked folder
            dirs += [root / name, root / name / MODEL_DIR, root / name / EVAL_DIR, root / name / NO_UPDATE_EVAL_DIR]
    return dirs


def remove_run_temps(root: Path, stages: set[str]) -> list[str]:
    """Delete `.{name}.XXXXXXXX.tmp` files (distilkit.atomic's) in the run's own folders; returns them relative to `root`."""
    return [str(p.relative_to(root)) for d in _run_dirs(root, stages) for p in remove_stale_temps(d)]


def _result_names(folder: Path) -> set[str]:
    """File names of evaluation results in `folder`: summary.json, and <seq>.txt with <seq>_time.txt for every
    sequence the summary lists or that has a `_time.txt` file (distilkit writes them in pairs)."""
    sequences = {n[: -len("_time.txt")] for n in os.listdir(folder) if n.endswith("_time.txt")}
    try:
        listed = json.loads((folder / SUMMARY).read_text(encoding="utf-8")).get("sequences", {})
        sequences |= {n for n in listed if isinstance(n, str)} if isinstance(listed, dict) else set()
    except (OSError, ValueError, AttributeError, RecursionError):
        pass
    return {SUMMARY} | {f"{s}.txt" for s in sequences} | {f"{s}_time.txt" for s in sequences}


def _real_dir(path: Path) -> bool:
    return not path.is_symlink() and path.is_dir()


def _clear(folder: Path, names: Any, subfolders: dict[str, Any]) -> None:
    """Delete the entries of `folder` named in `names` (a set, or a function of the folder giving one) and temp
    files, recurse into `subfolders` (name -> their names), then remove `folder` if that left it empty. Only
    entries actually listed are deleted (a crafted name with a '/' matches none); links are never followed."""
    if not _real_dir(folder):
        return
    for name, inner in subfolders.items():
        _clear(folder / name, inner, {})
    wanted = names(folder) if callable(names) else names
    for entry in os.listdir(folder):
        path = folder / entry
        if (entry in wanted or is_temp_name(entry)) and (path.is_symlink() or path.is_file()):
            path.unlink()  # a link itself, never its target
    if not os.listdir(folder):
        folder.rmdir()


def _leftovers(root: Path, folder: Path) -> list[str]:
    """Files and links under `folder` (not followed), relative to `root`."""
    found = []
    for here, dirs, files in os.walk(folder):
        links = [d for d in dirs if os.path.islink(os.path.join(here, d))]
        found += [str((Path(here) / name).relative_to(root)) for name in files + links]
    return found


def wipe(root: Path, stages: set[str]) -> list[str]:
    """Delete a distilkit run's files in `root` for `--force` (the marker stays: the folder remains a run);
    returns what is kept: files distilkit did not write, relative to `root`, sorted."""
    for name in sorted(stages):
        _clear(root / name, {METRICS, CHECKPOINT}, {MODEL_DIR: set(_MODEL_FILES), EVAL_DIR: _result_names,
                                                     NO_UPDATE_EVAL_DIR: _result_names})
    # one folder per reference tracker; results in baseline/ itself are the constant box of earlier versions
    _clear(root / BASELINE_DIR, _result_names, {label: _result_names for label in BASELINE_LABELS})
    for name in _TOP_FILES:
        path = root / name
        if path.is_symlink() or path.is_file():
            path.unlink()
    remove_stale_temps(root)
    return sorted(p for name in stages | {BASELINE_DIR} if _real_dir(root / name) for p in _leftovers(root, root / name))


def finished_row(stage_dir: str, name: str) -> tuple[Optional[dict[str, Any]], str]:
    """The stage's metrics row when its metrics.json reads back as one (else None and why, '' when there is
    none: the stage never finished). A damaged file means an unfinished stage, to be run again."""
    path = os.path.join(stage_dir, METRICS)
    if not os.path.lexists(path):
        return None, ""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if not text.strip():
            return None, f"{METRICS} is empty"
        row = json.loads(text)
    except (OSError, ValueError, RecursionError) as err:
        return None, f"{METRICS} is unreadable ({err})"
    if not isinstance(row, dict) or row.get("name") != name or not all(k in row for k in _ROW):
        return None, f"{METRICS} is not the metrics of stage {name!r}"
    return row, ""
