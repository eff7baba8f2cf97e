"""`report.json`, `report.md` and `auc_vs_fps.png`: every stage's size, cost, speed and accuracy side by side."""

from __future__ import annotations

import json
import os
from typing import Any

from distilkit.atomic import atomic_path, write_atomic

REPORT_JSON, REPORT_MD, PLOT = "report.json", "report.md", "auc_vs_fps.png"


def write_json_atomic(path: str, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def build_report(recipe: str, budget: str, data: str, eval_data: str, baselines: list[dict[str, Any]],
                 stages: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    """The report.json document; the teacher is `stages[0]`, `baselines` the reference trackers (constant box
    first, also kept as `baseline`)."""
    return {"recipe": recipe, "budget": budget, "data": data, "eval_data": eval_data, "baseline": baselines[0],
            "baselines": baselines, "stages": stages, **extra}


def _fmt_int(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else "–"


def _fmt(v: Any, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "–"


def markdown(report: dict[str, Any]) -> str:
    """Human-readable summary: every stage beside the teacher and the reference trackers."""
    stages = report["stages"]
    teacher_auc = stages[0].get("auc") if stages else None
    teacher_fps = stages[0].get("frame_fps") if stages else None
    lines = [
        f"# distilkit prune: {report['recipe']} ({report['budget']} budget)",
        "",
        f"- training data: `{report['data']}`; evaluation: `{report['eval_data']}`",
        f"- seed {report.get('seed')}, {report.get('world_size', 1)} process(es), device {report.get('device')}, "
        f"total {report.get('total_seconds', 0) / 60:.1f} min",
    ]
    if report.get("eval_command"):
        lines.append(f"- evaluate the final model again on the same sequences: `{report['eval_command']}`")
    lines += [
        "",
        "| stage | depth | MLP ratio | head | params | MACs | full ms | frame ms | frame FPS | speed-up | AUC | P | NP "
        "| AUC / teacher | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in stages:
        speed = s["frame_fps"] / teacher_fps if teacher_fps and isinstance(s.get("frame_fps"), float) else None
        keep = s["auc"] / teacher_auc if teacher_auc and isinstance(s.get("auc"), float) else None
        head = s.get("head", "") + (" + score" if s.get("score_head") else "")
        lines.append(
            f"| {s['name']} | {s['depth']} | {_fmt(s['mlp_ratio'], 'g')} | {head} | {_fmt_int(s['params'])} | "
            f"{_fmt_int(s['macs'])} | {_fmt(s.get('latency_ms'), '.1f')} | {_fmt(s.get('frame_ms'), '.1f')} | "
            f"{_fmt(s.get('frame_fps'), '.0f')} | {_fmt(speed, '.1f')}× | {_fmt(s['auc'], '.3f')} | "
            f"{_fmt(s['precision'], '.3f')} | {_fmt(s['norm_precision'], '.3f')} | {_fmt(keep, '.0%')} | "
            f"{_fmt(s['seconds'], '.0f')} |"
        )
    for b in report.get("baselines", [report["baseline"]]):
        keep = b["auc"] / teacher_auc if teacher_auc else None
        lines.append(f"| {b['name']} (baseline) | | | | | | | | {_fmt(b.get('fps'), '.0f')} | | {_fmt(b['auc'], '.3f')} | "
                     f"{_fmt(b['precision'], '.3f')} | {_fmt(b['norm_precision'], '.3f')} | {_fmt(keep, '.0%')} | |")
    for s in stages:
        if s.get("auc_no_update") is not None:
            lines.append(f"\nOnline template updates of `{s['name']}` (every {s.get('update_interval')} frames, frame "
                         f"picked by the score head): AUC {s['auc']:.3f} with, {s['auc_no_update']:.3f} without "
                         "(first-frame template throughout).")
        if s.get("score_accuracy") is not None:
            lines.append(f"\nScore head of `{s['name']}`: {s['score_accuracy']:.1%} of 256 held-out pairs (half negatives) "
                         "classified right at sigmoid 0.5.")
    threads = stages[0].get("latency_threads") if stages else None
    lines += ["", f"![AUC vs FPS]({PLOT})", "",
              "AUC / P / NP: success AUC, precision at 20 px and normalised precision at 0.2 on the evaluation set "
              "(pytracking conventions). full ms: median of one full forward (template, online template, search) at "
              f"batch 1 in fp32 with {threads} thread(s); frame ms / FPS: one `MixFormerV2Tracker.track` step (crop, "
              "cached templates, search forward, box), what tracking costs per frame; speed-up is per frame against "
              "the teacher. Baselines: FPS measured while tracking the evaluation set. MACs: distilkit.profile (exact, "
              "attention included). train s: optimisation wall time of the stage.", ""]
    return "\n".join(lines)


def plot_auc_vs_fps(report: dict[str, Any], path: str) -> None:
    """Scatter of AUC against per-frame tracking FPS, one labelled point per stage and per baseline tracker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    pts = [(s["frame_fps"], s["auc"], s["name"]) for s in report["stages"] if s.get("frame_fps") and s.get("auc") is not None]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", color="tab:blue", label="stages")
        for fps, auc, name in pts:
            ax.annotate(name, (fps, auc), textcoords="offset points", xytext=(4, 4), fontsize=8)
    for b in report.get("baselines", [report["baseline"]]):
        if b.get("fps"):
            ax.plot([b["fps"]], [b["auc"]], "s", color="tab:gray")
            ax.annotate(b["name"], (b["fps"], b["auc"]), textcoords="offset points", xytext=(4, -10), fontsize=8,
                        color="tab:gray")
        else:
            ax.axhline(b["auc"], color="tab:gray", ls="--", label=f"{b['name']} baseline")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("CPU FPS per tracked frame (log scale)")
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


def print_summary(console: Any, report: dict[str, Any]) -> None:
    """The end-of-run table on `console`: every stage and reference tracker, one row each."""
    from rich.table import Table

    table = Table(title=f"{report['recipe']} ({report['budget']}): {report['total_seconds'] / 60:.1f} min")
    for col in ("stage", "depth", "MLP r", "params", "MMACs", "FPS full", "FPS frame", "AUC", "P", "NP"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for s in report["stages"]:
        table.add_row(s["name"], str(s["depth"]), f"{s['mlp_ratio']:g}", f"{s['params']:,}", f"{s['macs'] / 1e6:,.1f}",
                      f"{s['fps']:.1f}", f"{s['frame_fps']:.1f}", f"{s['auc']:.3f}", f"{s['precision']:.3f}",
                      f"{s['norm_precision']:.3f}")
    for base in report["baselines"]:
        table.add_row(base["name"], "", "", "", "", "", f"{base['fps']:.1f}", f"{base['auc']:.3f}",
                      f"{base['precision']:.3f}", f"{base['norm_precision']:.3f}")
    console.print(table)
