"""Dense-to-sparse ablation: a T4-head student distilled from a corner-head teacher vs trained on ground truth only.

The teacher is the tiny MixViT with a plain corner head (12 layers) trained on ground truth (L1 ×5, GIoU ×2),
the first stage of the mixformerv2-s recipe (demo budget).
All students are the same 12-layer tiny MixFormerV2 with a T4 head, backbone copied from the teacher
(the recipe's `distill` stage, `init: backbone`), trained for the same samples and steps:
  dense-to-sparse  KL(teacher corner marginals ‖ student side distributions) ×5 + L1 ×5 + CIoU ×2,
  + attention      the same plus the prediction tokens' attention distilled towards the teacher's corners ×2
                   (`attn`, not in the paper),
  ground truth     L1 ×5 + CIoU ×2 (no teacher).
AUC on the held-out synthetic test split; seeds vary the students' sampling (teacher trained once, seed 0).

    python benchmarks/d2s_ablation.py [--seeds 0 1 2] [--out DIR]
    python benchmarks/d2s_ablation.py --quick --out /tmp/x      # smoke run, seconds
    --cache DIR keeps the trained teacher (pmdp_ablation.py --cache DIR reuses it, and back)

Writes DIR/d2s_ablation.md (table), .json (every seed's figures) and .png (mean ± std, seeds as dots).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    QUICK_TRACKING, RESULTS_DIR, TrackingBench, corner_teacher, TrackingScale, fmt_mean_std, machine, machine_line,
    count, distinct, markdown_table, mean_std, run_main, save_figure, set_threads, write_atomic, write_json,
)

STUDENTS = {
    "dense-to-sparse (KL on corner marginals)": {"kl": 5.0, "l1": 5.0, "ciou": 2.0},
    "dense-to-sparse + attention to teacher corners": {"kl": 5.0, "l1": 5.0, "ciou": 2.0, "attn": 2.0},
    "ground truth only": {"l1": 5.0, "ciou": 2.0},
}
PAPER = {"teacher": "68.2 (12L plain corner)", "dense-to-sparse (KL on corner marginals)": "67.7 (12L T4)"}


def run(scale: TrackingScale, seeds: list[int], cache: Path | None = None) -> dict[str, Any]:
    from distilkit.recipes.schema import Stage, StageBudget
    from distilkit.recipes.stages import setup_stage
    from distilkit.trackers.mixformerv2.family import MixFormerV2Family
    from distilkit.recipes.state import seed_everything

    bench = TrackingBench(scale)
    teacher, teacher_eval = corner_teacher(bench, cache)
    print(f"corner teacher (12 layers), {teacher_eval['seconds']:.0f} s of training: AUC {teacher_eval['auc']:.3f}")
    budget = dataclasses.replace(bench.budget, stages={"d2s": StageBudget(epochs=scale.student_epochs)})
    rows = []
    for name, losses in STUDENTS.items():
        stage = Stage(name="d2s", kind="distill", model="mixformerv2-12l", init="backbone", losses=losses)
        runs = []
        for seed in seeds:
            seed_everything(seed + 1)  # the T4 head's initial weights (the backbone is the teacher's)
            setup = setup_stage(MixFormerV2Family(), stage, budget, teacher)
            secs = bench.train(name, setup.student, losses, seed + 1, scale.student_epochs,
                               teacher=setup.teacher if "kl" in losses else None)
            runs.append({"seed": seed, "seconds": secs, **bench.evaluate(setup.student, name)})
            print(f"  {name:<42} seed {seed}: AUC {runs[-1]['auc']:.3f} ({secs:.0f} s)")
        rows.append({"name": name, "losses": losses, "bins": setup.student.config.bins, "runs": runs})
    return {"scale": dataclasses.asdict(scale), "teacher": teacher_eval,
            "constant_box_auc": bench.constant_box_auc(), "rows": rows}


def table(res: dict[str, Any]) -> str:
    head = ["model", "losses", "AUC % (mean ± std)", "P %", "NP %", "per seed AUC %", "train s / run", "paper LaSOT AUC"]
    rows = []
    for r in res["rows"]:
        runs = r["runs"]
        rows.append([f"12L T4 ({r['bins']} bins): {r['name']}", " + ".join(f"{k}×{v:g}" for k, v in r["losses"].items()),
                     fmt_mean_std([x["auc"] for x in runs]), fmt_mean_std([x["precision"] for x in runs]),
                     fmt_mean_std([x["norm_precision"] for x in runs]), " ".join(f"{x['auc'] * 100:.1f}" for x in runs),
                     f"{mean_std([x['seconds'] for x in runs])[0]:.0f}", PAPER.get(r["name"], "-")])
    t = res["teacher"]
    rows.append(["teacher: 12L plain corner head", " + ".join(f"{k}×{v:g}" for k, v in t["losses"].items()),
                 f"{t['auc'] * 100:.1f}", f"{t['precision'] * 100:.1f}", f"{t['norm_precision'] * 100:.1f}", "",
                 f"{t['seconds']:.0f}", PAPER["teacher"]])
    rows.append(["constant box (no tracking)", "-", f"{res['constant_box_auc'] * 100:.1f}", "", "", "", "", "-"])
    return markdown_table(head, rows)


def plot(res: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for i, r in enumerate(res["rows"]):
        vals = [x["auc"] * 100 for x in r["runs"]]
        m, s = mean_std(vals)
        ax.bar(i, m, yerr=s, capsize=4, color="tab:blue" if "kl" in r["losses"] else "tab:gray", alpha=0.8)
        ax.scatter([i] * len(vals), vals, color="black", s=10, zorder=3)
    ax.axhline(res["teacher"]["auc"] * 100, color="tab:green", ls="--", label="corner-head teacher")
    ax.axhline(res["constant_box_auc"] * 100, color="tab:red", ls=":", label="constant box")
    ax.set_xticks(range(len(res["rows"])), [r["name"].replace(" (", "\n(") for r in res["rows"]], fontsize=8)
    ax.set_ylabel("AUC % (synthetic test split)")
    ax.set_title(f"12-layer T4 students, {len(res['rows'][0]['runs'])} seeds (mean ± std)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    saved = save_figure(fig, path)
    plt.close(fig)
    return saved


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=count(0), nargs="+", default=[0, 1, 2])
    ap.add_argument("--quick", action="store_true", help="tiny data and one epoch each: a smoke run in seconds")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for d2s_ablation.{md,json,png}")
    ap.add_argument("--threads", type=count(1), default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="keep/reuse the trained teacher here (shared with pmdp_ablation.py at the same scale)")
    args = ap.parse_args(argv)
    distinct(args.seeds, "--seeds", ap)
    set_threads(args.threads)
    given = argv if argv is not None else sys.argv[1:]
    command = "python benchmarks/d2s_ablation.py " + " ".join(shlex.quote(a) for a in given)
    start = time.perf_counter()
    res = run(QUICK_TRACKING if args.quick else TrackingScale(), args.seeds, args.cache)
    res.update(seeds=args.seeds, quick=args.quick, seconds=time.perf_counter() - start, machine=machine(),
               command=command.strip())
    sc = res["scale"]
    text = (f"# Dense-to-sparse ablation\n\nCommand: `{res['command']}`  \nMachine: {machine_line(res['machine'])}  \n"
            f"Wall time: {res['seconds'] / 60:.1f} min; seeds {args.seeds} (teacher trained once, seed 0)\n\n"
            f"{sc['train_sequences']} train / {sc['test_sequences']} test synthetic sequences of {sc['length']} frames; "
            f"teacher {sc['teacher_epochs']} epochs, each student {sc['student_epochs']} epochs × "
            f"{sc['samples_per_epoch']} samples (batch {sc['batch_size']}).\n\n" + table(res))
    write_atomic(args.out / "d2s_ablation.md", text)
    write_json(args.out / "d2s_ablation.json", res)
    plot(res, args.out / "d2s_ablation.png")
    print(text)
    print(f"written to {args.out}/d2s_ablation.{{md,json,png}}")
    return res


if __name__ == "__main__":
    run_main(main)
