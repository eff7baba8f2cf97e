"""`report.json`, `report.md` and `auc_vs_fps.png`: every stage's size, cost, speed and accuracy side by side."""

from __future__ import annotations

import json
import os
from typing import Any

from distilkit.atomic import atomic_path, write_atomic

REPORT_JSON, REPORT_MD, PLOT = "report.json", "report.md", "auc_vs_fps.png"


def write_json_atomic(path: str, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def build_report(recipe: str, budget: str, data: str, eval_data: str, baseline: dict[str, Any],
                 stages: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    """The report.json document; the teacher is `stages[0]`."""
    return {"recipe": recipe, "budget": budget, "data": data, "eval_data": eval_data, "baseline": baseline,
            "stages": stages, **extra}


def _fmt_int(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else "–"


def _fmt(v: Any, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "–"


def markdown(report: dict[str, Any]) -> str:
    """Human-readable summary table with the teacher and baseline alongside."""
    stages = report["stages"]
    teacher_auc = stages[0].get("auc") if stages else None
    teacher_fps = stages[0].get("fps") if stages else None
    lines = [
        f"# distilkit prune: {report['recipe']} ({report['budget']} budget)",
        "",
        f"- training data: `{report['data']}`; evaluation: `{report['eval_data']}`",
        f"- seed {report.get('seed')}, {report.get('world_size', 1)} process(es), device {report.get('device')}, "
        f"total {report.get('total_seconds', 0) / 60:.1f} min",
        f"- baseline `{report['baseline']['name']}`: AUC {_fmt(report['baseline']['auc'], '.3f')}",
        "",
        "| stage | depth | MLP ratio | head | params | MACs | CPU ms | FPS | speed-up | AUC | P | NP | AUC / teacher | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in stages:
        speed = s["fps"] / teacher_fps if teacher_fps and isinstance(s.get("fps"), float) else None
        keep = s["auc"] / teacher_auc if teacher_auc and isinstance(s.get("auc"), float) else None
        head = s.get("head", "") + (" + score" if s.get("score_head") else "")
        lines.append(
            f"| {s['name']} | {s['depth']} | {_fmt(s['mlp_ratio'], 'g')} | {head} | {_fmt_int(s['params'])} | "
            f"{_fmt_int(s['macs'])} | {_fmt(s.get('latency_ms'), '.1f')} | {_fmt(s['fps'], '.1f')} | "
            f"{_fmt(speed, '.1f')}× | {_fmt(s['auc'], '.3f')} | {_fmt(s['precision'], '.3f')} | "
            f"{_fmt(s['norm_precision'], '.3f')} | {_fmt(keep, '.0%')} | {_fmt(s['seconds'], '.0f')} |"
        )
    for s in stages:
        if s.get("score_accuracy") is not None:
            lines.append(f"\nScore head of `{s['name']}`: {s['score_accuracy']:.1%} of 256 held-out pairs (half negatives) "
                         "classified right at sigmoid 0.5.")
    threads = stages[0].get("latency_threads") if stages else None
    lines += ["", f"![AUC vs FPS]({PLOT})", "",
              "AUC / P / NP: success AUC, precision at 20 px and normalised precision at 0.2 on the evaluation set "
              "(pytracking conventions). CPU ms / FPS: median of one full forward (template, online template, "
              f"search) at batch 1 in fp32 with {threads} thread(s). MACs: distilkit.profile (exact, attention "
              "included). train s: optimisation wall time of the stage.", ""]
    return "\n".join(lines)


def plot_auc_vs_fps(report: dict[str, Any], path: str) -> None:
    """Scatter of AUC against CPU FPS, one labelled point per stage, the baseline as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    pts = [(s["fps"], s["auc"], s["name"]) for s in report["stages"] if s.get("fps") and s.get("auc") is not None]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", color="tab:blue")
        for fps, auc, name in pts:
            ax.annotate(name, (fps, auc), textcoords="offset points", xytext=(4, 4), fontsize=8)
    base = report["baseline"].get("auc")
    if base is not None:
        ax.axhline(base, color="tab:gray", ls="--", label=f"{report['baseline']['name']} baseline")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("CPU FPS (full forward, batch 1, log scale)")
    ax.set_ylabel("AUC")
    ax.set_title(f"{report['recipe']} ({report['budget']}): accuracy vs speed per stage")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def write_report(out_dir: str, report: dict[str, Any]) -> None:
    write_json_atomic(os.path.join(out_dir, REPORT_JSON), report)
    plot_auc_vs_fps(report, os.path.join(out_dir, PLOT))
    write_atomic(os.path.join(out_dir, REPORT_MD), markdown(report))
