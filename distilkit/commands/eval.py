"""`distilkit eval MODEL --data SPEC`: track, score (pytracking protocol), save results, compare, plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from distilkit.errors import DistilkitError
from distilkit.limits import MAX_THREADS
from distilkit.names import check_plain_name

class _FirstN:
    """The first `n` sequences of a dataset (all when n is None), keeping its protocol name and root."""

    def __init__(self, dataset: Any, n: Optional[int]):
        self.dataset, self.name = dataset, getattr(dataset, "name", "")
        self.root = getattr(dataset, "root", None)
        self.n = len(dataset) if n is None else min(n, len(dataset))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.dataset[i]

    @property
    def names(self) -> Optional[list[str]]:
        """The reader's sequence names without loading them (None: the dataset lists none)."""
        names = getattr(self.dataset, "names", None)
        return names[: self.n] if isinstance(names, list) else None


def _default_label(model: str) -> str:
    """The results folder name for MODEL: its last path component, or for `distilkit prune`'s
    `<run>/<stage>/model` folders the stage's name (every stage's folder is called `model`)."""
    path = Path(model)
    if path.name == "model" and (path / "arch.json").is_file() and path.parent.name:
        return path.parent.name
    return path.name or model


def _check_baselines(names: list[str]) -> None:
    """--baseline takes baseline trackers only (not models), checked before anything is built."""
    from distilkit.eval.baselines import BASELINES

    for b in names:
        if b.lower() not in BASELINES:
            raise DistilkitError(f"--baseline {b!r} is not a baseline; expected one of {', '.join(BASELINES)}")


def _prepare_export(spec: str, device: str, compile_: bool, threads: Optional[int]) -> Any:
    """An export folder's graphs loaded once in onnxruntime (CPU), shared by every sequence's OnnxTracker."""
    from distilkit.deploy import OnnxTrackerModel

    if device != "cpu" or compile_:
        flag = "--compile" if compile_ else f"--device {device}"
        raise DistilkitError(f"{spec}: an export folder runs on onnxruntime's CPU provider; {flag} does not apply")
    return OnnxTrackerModel(spec, threads)


def _prepare_model(spec: str, device: str, compile_: bool = False, threads: Optional[int] = None) -> Any:
    """The MixFormerV2 model MODEL names, built or loaded and prepared (prepacked or compiled) once, so
    every dataset and sequence tracks with the same model (random weights included); for an export folder
    (`distilkit export`), its graphs loaded in onnxruntime."""
    from distilkit.deploy.manifest import is_export_dir

    if is_export_dir(spec):
        return _prepare_export(spec, device, compile_, threads)
    from distilkit.commands.models import distilkit_model_names, resolve_model
    from distilkit.trackers.mixformerv2 import MixFormerV2, MixFormerV2Tracker

    model, _ = resolve_model(spec)
    if not isinstance(model, MixFormerV2):
        raise DistilkitError(f"{spec!r} is a {type(model).__name__}, not a MixFormerV2 tracker model: cannot track with it")
    if spec in distilkit_model_names() and not Path(spec).is_dir():
        from rich.console import Console

        Console(stderr=True).print(
            f"note: {spec!r} is an architecture name, so its weights are random (untrained); pass a directory "
            "written by distilkit.io.save or distilkit prune (e.g. runs/mixformerv2-s/score/model) to evaluate trained weights"
        )
    prepared = MixFormerV2Tracker(model, device=device, compile=compile_).model
    if compile_:  # compile now: seconds of one-off work must not count as tracking time (FPS)
        import numpy as np

        size = prepared.config.search_size
        MixFormerV2Tracker(prepared, device=device, prepack=False).initialize(
            np.zeros((size, size, 3), np.uint8), np.array([size / 4, size / 4, size / 2, size / 2]))
    return prepared


def _tracker_factory(spec: str, dataset_name: str, update_interval: Optional[int], device: str,
                     compile_: bool = False, prepared: Any = None):
    """Zero-argument factory of fresh trackers (one per sequence: a tracker holds per-sequence state) for
    MODEL, a baseline name or a MixFormerV2 model; `prepared` (from `_prepare_model`) shares one model."""
    from distilkit.eval.baselines import BASELINES, make_baseline

    if spec.lower() in BASELINES:
        make_baseline(spec)  # fail now (e.g. OpenCV missing), not inside the loop
        return lambda: make_baseline(spec)
    from distilkit.deploy import OnnxTracker, OnnxTrackerModel
    from distilkit.trackers.single_object import default_update_interval

    model = prepared if prepared is not None else _prepare_model(spec, device, compile_)
    if isinstance(model, OnnxTrackerModel):
        interval = update_interval or default_update_interval(model.name, dataset_name)
        return lambda: OnnxTracker(model, update_interval=interval)
    from distilkit.trackers.mixformerv2 import MixFormerV2Tracker

    interval = update_interval or default_update_interval(model.config.name, dataset_name)
    return lambda: MixFormerV2Tracker(model, update_interval=interval, device=device, prepack=False)


def _compare_folders(paths: list[Path]) -> list[Any]:
    """Results from --compare folders: a results folder itself, or a folder of result folders."""
    from distilkit.eval.evaluate import SUMMARY_FILE, load_results

    found = []
    for path in paths:
        if (path / SUMMARY_FILE).is_file():
            found.append(load_results(path))
        elif path.is_dir() and any(p.joinpath(SUMMARY_FILE).is_file() for p in path.iterdir()):
            found.extend(load_results(p) for p in sorted(path.iterdir()) if p.joinpath(SUMMARY_FILE).is_file())
        else:
            raise DistilkitError(f"--compare {path}: no summary.json there (not a distilkit eval results folder)")
    return found


def _table(rows: list[Any], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for col in ("tracker", "sequences", "frames", "AUC", "P", "NP", "AO", "SR0.5", "FPS"):
        table.add_column(col, justify="left" if col == "tracker" else "right")
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    for r in rows:
        o = r.overall
        fps = r.fps if r.sequences else o.get("fps")
        table.add_row(r.name, str(o.get("sequences", "-")), str(o.get("frames", "-")), pct(o.get("auc")),
                      pct(o.get("precision")), pct(o.get("norm_precision")), pct(o.get("got10k_ao")), pct(o.get("got10k_sr50")),
                      "-" if fps is None else f"{fps:.1f}")
    table.caption = ("AUC, P, NP: pytracking (mean over sequences). AO, SR0.5: GOT-10k toolkit (frames after the "
                     "first with valid ground truth, pooled over sequences); per-sequence means are in summary.json")
    return table


def eval_command(
    model: str = typer.Argument(...,
        help="Baseline (constant, csrt, kcf), distilkit model name, a saved model directory, or an export folder "
             "(distilkit export; tracks on onnxruntime)."),
    data: str = typer.Option("synthetic", "--data",
        help="Datasets: synthetic[:N] (the demo's held-out split), synthetic-test:RECIPE[@BUDGET] (the split that recipe's "
             "report scored), got10k:DIR, lasot:DIR, trackingnet:DIR (comma-separated)."),
    out: Optional[Path] = typer.Option(None, "--out",
        help="Write <out>/<tracker>/<seq>.txt, summary.json and <out>/success.png."),
    compare: Optional[list[Path]] = typer.Option(None, "--compare",
        help="Earlier result folder(s) to compare with (repeatable)."),
    sequences: Optional[int] = typer.Option(None, "--sequences", min=1,
        help="Evaluate only the first N sequences of each dataset."),
    baseline: Optional[list[str]] = typer.Option(None, "--baseline",
        help="Also run a baseline side by side: constant, csrt, kcf (repeatable)."),
    name: Optional[str] = typer.Option(None, "--name", help="Tracker label in tables, plots and the results folder."),
    update_interval: Optional[int] = typer.Option(None, "--update-interval", min=1,
        help="Online template update interval (default: the official one of the model family on that benchmark; 25 on "
             "synthetic data)."),
    exclude_invalid: Optional[bool] = typer.Option(None, "--exclude-invalid/--count-invalid",
        help="Drop or count-as-failure frames without valid gt (default: pytracking per dataset)."),
    device: str = typer.Option("cpu", "--device", help="torch device for model trackers."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, max=MAX_THREADS,
        help="torch (or onnxruntime) intra-op threads."),
    compile_: bool = typer.Option(False, "--compile",
        help="Compile the per-frame path with TorchInductor (needs a C++ compiler; faster per frame on CPU after a few "
             "seconds of compiling, see benchmarks/RESULTS.md)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Evaluate a tracker (or baseline) with the pytracking one-pass protocol; print AUC / P / NP."""
    from rich.console import Console

    from distilkit.eval.baselines import BASELINES
    from distilkit.trackers.mixformerv2.family.data import eval_datasets
    from distilkit.eval.evaluate import check_unique_names, combine_results, evaluate, plot_success

    from distilkit.recipes.distributed import check_device

    check_device(device)
    _check_baselines(list(baseline or []))
    specs = [model, *dict.fromkeys(b.lower() for b in baseline or [] if b.lower() != model.lower())]
    # the label names the results folder <out>/<label>
    labels = [check_plain_name(name, "--name") if name is not None
              else check_plain_name(_default_label(model), "tracker label (from MODEL; set --name)"), *specs[1:]]
    if labels[0] in labels[1:]:
        raise DistilkitError(f"tracker label {labels[0]!r} is also a --baseline: set another --name")
    compared = _compare_folders(list(compare or []))
    if out is not None:  # fail before tracking anything, not when saving at the end
        from distilkit.io import make_output_dir

        make_output_dir(out, f"--out {out}")
    datasets = [_FirstN(d, sequences) for d in eval_datasets(data)]
    check_unique_names(datasets)  # before tracking: one name would overwrite the other's result files
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    from distilkit.heap import retain_freed_memory

    retain_freed_memory()  # this process tracks frames: no per-frame page faults for freed buffers
    # one model per MODEL, shared by every dataset (not one random or reloaded model per dataset)
    prepared = {spec: _prepare_model(spec, device, compile_, threads) for spec in specs if spec.lower() not in BASELINES}
    factories = {(spec, d.name): _tracker_factory(spec, d.name, update_interval, device, prepared=prepared.get(spec))
                 for spec in specs for d in datasets}
    console = Console()
    rows = []
    for spec, label in zip(specs, labels):
        parts = [evaluate(factories[(spec, d.name)], d, name=label, progress=progress, exclude_invalid=exclude_invalid)
                 for d in datasets]
        result = combine_results(parts, label) if len(parts) > 1 else parts[0]
        if out is not None:
            result.save(out / label)
        rows.append(result)
    taken = {r.name for r in rows}
    for r in compared:  # keep labels unique: a compared run of the same tracker names its folder
        if r.name in taken:
            r.name = f"{r.name} ({r.out_dir.parent.name}/{r.out_dir.name})"
        taken.add(r.name)
        rows.append(r)
    console.print(_table(rows, f"One-pass evaluation on {data} (%)"))
    for r in rows:
        if "note" in r.overall:
            console.print(f"{r.name}: {r.overall['note']}")
    if out is not None:
        console.print(f"results in {out}/<tracker>/ (x,y,w,h per frame, summary.json)")
        if any(r.success_curve is not None for r in rows):
            console.print(f"success plot {plot_success(rows, out / 'success.png', title=f'Success plot: {data}')}")
