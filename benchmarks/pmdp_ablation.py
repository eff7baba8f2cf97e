"""PMDP ablation: how to get a 4-layer student out of a 12-layer teacher (paper Table 2d/2e, small scale).

Students, each trained with the same samples, steps and losses after initialisation:
  Tea-fir4      the teacher's first 4 blocks,
  Tea-skip4     blocks 3/6/9/12 (1-based): PMDP with m = 0, where γ = 0 from the first step,
  influence-4   the 4 blocks with the highest block influence (1 − cos(x_in, x_out)) on training crops,
  PMDP m=short  all 12 blocks, the 8 skipped ones faded out by the cosine γ over `m` epochs, then removed,
  PMDP m=long   the same with a longer elimination phase.
Tracking: tiny models on the synthetic tracking data, demo budget of the mixformerv2-s recipe. The teacher
is its first stage, the 12-layer MixViT with a plain corner head trained on ground truth (like the paper's
MixViT-B teacher of this ablation; in this budget T4-head models, trained on ground truth or dense-to-sparse,
stay far below it, see d2s_ablation.py). Students keep the corner head and are trained with the recipe
trainer: L1 ×5 + GIoU ×2 on ground truth and feature MSE ×0.2 against teacher layers 3/6/9/12 (there are no
side distributions for a logit KL with corner heads); AUC on the held-out synthetic test split.
Classification: the 12-layer timm ViT of examples/prune_timm_vit.py (shapes task), logit KD; test accuracy.
The teacher is trained once (seed 0); seeds vary the students' data order, sampling and initial state.

    python benchmarks/pmdp_ablation.py [--seeds 0 1 2] [--task all|tracking|classification] [--out DIR]
    python benchmarks/pmdp_ablation.py --quick --out /tmp/x     # smoke run, seconds
    --cache DIR keeps the trained teacher (d2s_ablation.py --cache DIR reuses it, and back)

Writes DIR/pmdp_ablation.md (tables), .json (every seed's figures) and .png (mean ± std, seeds as dots).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import itertools
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    QUICK_TRACKING, RESULTS_DIR, TrackingBench, corner_teacher, TrackingScale, fmt_mean_std, machine, machine_line,
    count, distinct, markdown_table, mean_std, run_main, save_figure, set_threads, write_atomic, write_json,
)

DEPTH, KEEP = 12, 4
TEACHER_FEATURES = [2, 5, 8, 11]  # teacher layers (0-based) the 4 student layers mimic: 3/6/9/12, as the recipe
STUDENT_LOSSES = {"l1": 5.0, "giou": 2.0, "feature": 0.2}  # corner-head students: no side distributions to KL
M_SHORT, M_LONG = 0.1, 0.5  # elimination length m as a fraction of the student's epochs (paper: 40 of 500)
BLOCKS = "backbone.blocks"
CALIBRATION_BATCHES = 4  # training batches that block influence is averaged over
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "prune_timm_vit.py"


def variants(epochs: float) -> list[dict[str, Any]]:
    """The rows: name, how the 4 kept blocks are chosen, the elimination length m (epochs) and whether the
    fading layers are frozen (the official code's PMDP) or keep training."""
    return [
        {"name": "Tea-fir4", "layers": "first", "m": 0.0, "freeze": True},
        {"name": "Tea-skip4 (PMDP m = 0)", "layers": "skip", "m": 0.0, "freeze": True},
        {"name": "influence-4 (m = 0)", "layers": "influence", "m": 0.0, "freeze": True},
        {"name": f"PMDP m = {M_SHORT * epochs:g} ep", "layers": "skip", "m": M_SHORT * epochs, "freeze": True},
        {"name": f"PMDP m = {M_LONG * epochs:g} ep", "layers": "skip", "m": M_LONG * epochs, "freeze": True},
        {"name": f"PMDP m = {M_LONG * epochs:g} ep, fading layers train", "layers": "skip", "m": M_LONG * epochs,
         "freeze": False},
    ]


def kept_layers(how: str, influence: list[float]) -> list[int]:
    from distilkit.depth import select_layers

    removed = (select_layers(DEPTH, KEEP, "influence", scores=influence) if how == "influence"
               else select_layers(DEPTH, KEEP, how))
    return [i for i in range(DEPTH) if i not in removed]


def run_variants(epochs: float, influence: list[float], seeds: list[int], log: Callable[[str], None],
                 run_one: Callable[[dict[str, Any], list[int], int], dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per variant, `run_one(variant, kept, seed)` per seed; a variant that trains exactly the same
    student as an earlier row (same kept layers and m) reuses its runs."""
    rows: list[dict[str, Any]] = []
    for v in variants(epochs):
        kept = kept_layers(v["layers"], influence)
        same = next((r for r in rows if r["kept"] == kept and r["m"] == v["m"]
                     and (r["freeze"] == v["freeze"] or v["m"] == 0)), None)  # m = 0: nothing fades
        if same is not None:
            rows.append({**v, "kept": kept, "runs": same["runs"], "same_as": same["name"]})
            log(f"  {v['name']:<24} keeps the layers of {same['name']}: same runs")
            continue
        rows.append({**v, "kept": kept, "runs": [run_one(v, kept, seed) for seed in seeds]})
    return rows


# -- tracking --------------------------------------------------------------------------------------
def tracking_student(bench: TrackingBench, teacher: Any, kept: list[int], m: float, seed: int,
                     epochs: int, freeze: bool = True) -> tuple[Any, float]:
    """Cut (m = 0) or PMDP-trained (m > 0; fading layers frozen unless `freeze` is False) 4-layer student;
    returns (model, training seconds)."""
    from distilkit.depth import init_student_from_layers
    from distilkit.recipes.schema import Stage, StageBudget
    from distilkit.recipes.stages import finish_stage, setup_stage
    from distilkit.trackers.mixformerv2.family import MixFormerV2Family

    if m == 0:
        student = init_student_from_layers(teacher, kept, blocks=BLOCKS)
        pairs = list(enumerate(TEACHER_FEATURES))
        return student, bench.train("student", student, STUDENT_LOSSES, seed, epochs, teacher=teacher, feature_pairs=pairs)
    pairs = [[k, t] for k, t in zip(kept, TEACHER_FEATURES)]
    stage = Stage(name="pmdp", kind="depth", losses=STUDENT_LOSSES, remove=[i for i in range(DEPTH) if i not in kept],
                  feature_pairs=pairs, freeze_removed=freeze)
    budget = dataclasses.replace(bench.budget, stages={"pmdp": StageBudget(epochs=epochs, m=m)})
    setup = setup_stage(MixFormerV2Family(), stage, budget, teacher)
    seconds = bench.train("pmdp", setup.student, STUDENT_LOSSES, seed, epochs, teacher=setup.teacher,
                          pruner=setup.pruner, feature_pairs=[tuple(p) for p in pairs])
    finish_stage(stage, setup, float(epochs))
    return setup.student, seconds


def run_tracking(scale: TrackingScale, seeds: list[int], log: Callable[[str], None],
                 cache: Path | None = None) -> dict[str, Any]:
    from distilkit.depth import block_influence

    bench = TrackingBench(scale)
    teacher, teacher_eval = corner_teacher(bench, cache)
    log(f"teacher: 12-layer corner head, AUC {teacher_eval['auc']:.3f} ({teacher_eval['seconds']:.0f} s of training)")
    loader = torch.utils.data.DataLoader(bench.pairs(seed=10_000, cached=False), batch_size=scale.batch_size)
    calib = [(b["template"], b["online_template"], b["search"]) for b in itertools.islice(loader, CALIBRATION_BATCHES)]
    influence = block_influence(teacher, calib, blocks=BLOCKS)

    def run_one(v: dict[str, Any], kept: list[int], seed: int) -> dict[str, Any]:
        student, secs = tracking_student(bench, teacher, kept, v["m"], seed + 1, scale.student_epochs, v["freeze"])
        assert len(student.backbone.blocks) == KEEP
        run = {"seed": seed, "seconds": secs, **bench.evaluate(student, v["name"])}
        log(f"  {v['name']:<24} seed {seed}: AUC {run['auc']:.3f} ({secs:.0f} s)")
        return run

    rows = run_variants(scale.student_epochs, influence, seeds, log, run_one)
    return {"scale": dataclasses.asdict(scale), "teacher": teacher_eval,
            "constant_box_auc": bench.constant_box_auc(), "influence": influence, "rows": rows,
            "losses": STUDENT_LOSSES, "teacher_features": TEACHER_FEATURES}


# -- classification --------------------------------------------------------------------------------
def load_example() -> Any:
    """examples/prune_timm_vit.py as a module (its data, model and training loop are reused as they are)."""
    spec = importlib.util.spec_from_file_location("prune_timm_vit", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run_classification(quick: bool, seeds: list[int], log: Callable[[str], None]) -> dict[str, Any]:
    import copy

    from distilkit.depth import CosineSchedule, ProgressiveDepthPruner, block_influence, init_student_from_layers

    ex = load_example()
    cfg = dataclasses.replace(ex.QUICK if quick else ex.Config(), keep=KEEP)
    torch.manual_seed(0)
    train, test = ex.make_images(cfg.train_size, cfg.img, "train", 0), ex.make_images(cfg.test_size, cfg.img, "test", 0)
    start = time.perf_counter()
    teacher = ex.fit(ex.vit(cfg), train, cfg, cfg.teacher_epochs, 0).requires_grad_(False)
    teacher_acc = ex.accuracy(teacher, test)
    log(f"classification teacher (12 layers) trained in {time.perf_counter() - start:.0f} s: acc {teacher_acc:.3f}")
    influence = block_influence(teacher, [train[0][i:i + 256] for i in range(0, min(len(train[0]), 1024), 256)])
    iters = math.ceil(cfg.train_size / cfg.batch)

    def run_one(v: dict[str, Any], kept: list[int], seed: int) -> dict[str, Any]:
        torch.manual_seed(seed + 1)
        t0 = time.perf_counter()
        if v["m"] == 0:
            student = init_student_from_layers(teacher, kept).requires_grad_(True)
            ex.fit(student, train, cfg, cfg.student_epochs, seed + 1, teacher=teacher)
        else:
            student = copy.deepcopy(teacher).requires_grad_(True)
            pruner = ProgressiveDepthPruner(student, [i for i in range(DEPTH) if i not in kept],
                                            schedule=CosineSchedule(m=v["m"]), unit="iteration",
                                            iters_per_epoch=iters, freeze_removed=v["freeze"])
            ex.fit(student, train, cfg, cfg.student_epochs, seed + 1, teacher=teacher, pruner=pruner)
            pruner.finalize()
        assert len(student.blocks) == KEEP
        run = {"seed": seed, "seconds": time.perf_counter() - t0, "accuracy": ex.accuracy(student, test)}
        log(f"  {v['name']:<24} seed {seed}: acc {run['accuracy']:.3f}")
        return run

    rows = run_variants(cfg.student_epochs, influence, seeds, log, run_one)
    return {"config": dataclasses.asdict(cfg), "teacher": {"accuracy": teacher_acc}, "influence": influence,
            "chance": 1.0 / len(ex.SHAPES), "rows": rows}


# -- report ----------------------------------------------------------------------------------------
PAPER_LASOT = {"Tea-fir4": "62.9", "Tea-skip4 (PMDP m = 0)": "64.4"}  # PMDP (m = 40): 64.8


def label(row: dict[str, Any]) -> str:
    return row["name"] + (f" (same layers as {row['same_as']}: same runs)" if "same_as" in row else "")


def tracking_table(res: dict[str, Any]) -> str:
    head = ["student (4 of 12 layers)", "kept (1-based)", "AUC % (mean ± std)", "P %", "NP %", "per seed AUC %",
            "train s / run", "paper LaSOT AUC"]
    rows = []
    for r in res["rows"]:
        runs = r["runs"]
        paper = PAPER_LASOT.get(r["name"], "64.8 (m = 40 of 500)" if r["name"].startswith("PMDP m") else "-")
        rows.append([label(r), "/".join(str(k + 1) for k in r["kept"]), fmt_mean_std([x["auc"] for x in runs]),
                     fmt_mean_std([x["precision"] for x in runs]), fmt_mean_std([x["norm_precision"] for x in runs]),
                     " ".join(f"{x['auc'] * 100:.1f}" for x in runs), f"{mean_std([x['seconds'] for x in runs])[0]:.0f}",
                     paper])
    t = res["teacher"]
    rows.append(["teacher: 12L plain corner head", "all", f"{t['auc'] * 100:.1f}", f"{t['precision'] * 100:.1f}",
                 f"{t['norm_precision'] * 100:.1f}", "", f"{t['seconds']:.0f}", "69.0 (MixViT-B Py-Corner)"])
    rows.append(["constant box (no tracking)", "-", f"{res['constant_box_auc'] * 100:.1f}", "", "", "", "", "-"])
    return markdown_table(head, rows)


def classification_table(res: dict[str, Any]) -> str:
    head = ["student (4 of 12 layers)", "kept (1-based)", "test acc % (mean ± std)", "per seed acc %", "train s / run"]
    rows = [[label(r), "/".join(str(k + 1) for k in r["kept"]), fmt_mean_std([x["accuracy"] for x in r["runs"]]),
             " ".join(f"{x['accuracy'] * 100:.1f}" for x in r["runs"]),
             f"{mean_std([x['seconds'] for x in r['runs']])[0]:.1f}"] for r in res["rows"]]
    rows.append(["teacher (12 layers)", "all", f"{res['teacher']['accuracy'] * 100:.1f}", "", ""])
    rows.append(["chance", "-", f"{res['chance'] * 100:.1f}", "", ""])
    return markdown_table(head, rows)


def plot(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(k, key, label) for k, key, label in (("tracking", "auc", "tracking AUC % (synthetic test)"),
                                                    ("classification", "accuracy", "test accuracy % (shapes)"))
              if k in results]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.2), squeeze=False)
    for ax, (task, key, label) in zip(axes[0], panels):
        res = results[task]
        names = [r["name"] for r in res["rows"]]
        for i, r in enumerate(res["rows"]):
            vals = [x[key] * 100 for x in r["runs"]]
            m, s = mean_std(vals)
            ax.bar(i, m, yerr=s, capsize=4, color="tab:blue" if r["m"] > 0 else "tab:gray", alpha=0.8)
            ax.scatter([i] * len(vals), vals, color="black", s=10, zorder=3)
        ax.axhline(res["teacher"][key] * 100, color="tab:green", ls="--", label="12-layer teacher")
        ax.set_xticks(range(len(names)), [n.replace(" (", "\n(") for n in names], fontsize=8)
        ax.set_ylabel(label)
        ax.set_title(f"{task}: 4-layer students, {len(res['rows'][0]['runs'])} seeds (mean ± std)")
        lo = min(x[key] for r in res["rows"] for x in r["runs"]) * 100
        ax.set_ylim(max(0.0, lo - 10),
                    max(res["teacher"][key] * 100, max(x[key] for r in res["rows"] for x in r["runs"]) * 100) + 5)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    saved = save_figure(fig, path)
    plt.close(fig)
    return saved


def report(results: dict[str, Any], command: str) -> str:
    parts = [f"# PMDP ablation\n\nCommand: `{command}`  \nMachine: {machine_line(results['machine'])}  \n"
             f"Wall time: {results['seconds'] / 60:.1f} min; seeds {results['seeds']} (teacher trained once, seed 0)\n"]
    if "tracking" in results:
        sc = results["tracking"]["scale"]
        parts.append("\n## Tracking (tiny 12-layer corner-head MixViT teacher, synthetic data)\n\n"
                     f"{sc['train_sequences']} train / {sc['test_sequences']} test sequences of {sc['length']} frames; "
                     f"teacher {sc['teacher_epochs']} "
                     f"epochs, every student {sc['student_epochs']} epochs × {sc['samples_per_epoch']} samples "
                     f"(batch {sc['batch_size']}).\n\n" + tracking_table(results["tracking"]))
    if "classification" in results:
        c = results["classification"]["config"]
        parts.append(f"\n## Classification (timm ViT, examples/prune_timm_vit.py)\n\n{c['train_size']} train / "
                     f"{c['test_size']} test images; teacher {c['teacher_epochs']} epochs, every student "
                     f"{c['student_epochs']} epochs of logit KD (T = {c['temperature']:g}).\n\n"
                     + classification_table(results["classification"]))
    return "".join(parts)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=count(0), nargs="+", default=[0, 1, 2])
    ap.add_argument("--task", choices=["all", "tracking", "classification"], default="all")
    ap.add_argument("--quick", action="store_true", help="tiny data and one epoch each: a smoke run in seconds")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for pmdp_ablation.{md,json,png}")
    ap.add_argument("--threads", type=count(1), default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="keep/reuse the trained tracking teachers here (shared with d2s_ablation.py at the same scale)")
    args = ap.parse_args(argv)
    distinct(args.seeds, "--seeds", ap)
    set_threads(args.threads)
    given = argv if argv is not None else sys.argv[1:]
    command = "python benchmarks/pmdp_ablation.py " + " ".join(shlex.quote(a) for a in given)
    start = time.perf_counter()
    results: dict[str, Any] = {"seeds": args.seeds, "quick": args.quick}
    if args.task in ("all", "tracking"):
        results["tracking"] = run_tracking(QUICK_TRACKING if args.quick else TrackingScale(), args.seeds, print, args.cache)
    if args.task in ("all", "classification"):
        results["classification"] = run_classification(args.quick, args.seeds, print)
    results["seconds"] = time.perf_counter() - start
    results["machine"] = machine()
    results["command"] = command.strip()
    text = report(results, results["command"])
    write_atomic(args.out / "pmdp_ablation.md", text)
    write_json(args.out / "pmdp_ablation.json", results)
    plot(results, args.out / "pmdp_ablation.png")
    print(text)
    print(f"written to {args.out}/pmdp_ablation.{{md,json,png}}")
    return results


if __name__ == "__main__":
    run_main(main)
