"""`report.json`, `report.md` and `auc_vs_fps.png`: every stage's size, cost, speed and accuracy side by side."""

from __future__ import annotations

import json
import os
from typing import Any

from distilkit.atomic import atomic_path, write_atomic
from distilkit.recipes.family import ModelFamily

REPORT_JSON, REPORT_MD, PLOT = "report.json", "report.md", "auc_vs_fps.png"


def write_json_atomic(path: str, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def build_report(recipe: str, budget: str, data: str, eval_data: str, baselines: list[dict[str, Any]],
                 stages: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    """The report.json document; the teacher is `stages[0]`, `baselines` the family's reference rows (the first,
    e.g. the constant box, also kept as `baseline`)."""
    return {"recipe": recipe, "budget": budget, "data": data, "eval_data": eval_data,
            "baseline": baselines[0] if baselines else None,
            "baselines": baselines, "stages": stages, **extra}


def _fmt_int(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else "–"


def _fmt(v: Any, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else "–"


def markdown(report: dict[str, Any], family: ModelFamily) -> str:
    """Human-readable summary: every stage beside the teacher and the reference rows, in the family's columns."""
    stages = report["stages"]
    (primary, primary_label), speed_key = family.metrics[0], family.speed[0]
    teacher_score = stages[0].get(primary) if stages else None
    teacher_speed = stages[0].get(speed_key) if stages else None
    columns = family.report_columns()
    lines = [
        f"# distilkit prune: {report['recipe']} ({report['budget']} budget)",
        "",
        f"- model family `{family.name}`; training data: `{report['data']}`; evaluation: `{report['eval_data']}`",
        f"- seed {report.get('seed')}, {report.get('world_size', 1)} process(es), device {report.get('device')}, "
        f"total {report.get('total_seconds', 0) / 60:.1f} min",
    ]
    if report.get("eval_command"):
        lines.append(f"- evaluate the final model again on the same data: `{report['eval_command']}`")
    headers = (["stage", "depth", "MLP ratio"] + [c.header for c in columns] + ["params", "MACs", "full ms", family.speed[1],
               "speed-up"] + [label for _, label in family.metrics] + [f"{primary_label} / teacher", "train s"])
    lines += ["", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for s in stages:
        speed = s[speed_key] / teacher_speed if teacher_speed and isinstance(s.get(speed_key), float) else None
        keep = s[primary] / teacher_score if teacher_score and isinstance(s.get(primary), float) else None
        cells = ([s["name"], str(s["depth"]), _fmt(s["mlp_ratio"], "g")] + [c.cell(s) for c in columns]
                 + [_fmt_int(s["params"]), _fmt_int(s["macs"]), _fmt(s.get("latency_ms"), ".1f"),
                    _fmt(s.get(speed_key), ".0f"), f"{_fmt(speed, '.1f')}×"]
                 + [_fmt(s.get(k), ".3f") for k, _ in family.metrics] + [_fmt(keep, ".0%"), _fmt(s["seconds"], ".0f")])
        lines.append("| " + " | ".join(cells) + " |")
    for b in _baselines(report):
        keep = b[primary] / teacher_score if teacher_score else None
        cells = ([f"{b['name']} (baseline)", "", ""] + ["" for _ in columns] + ["", "", "", _fmt(b.get("fps"), ".0f"), ""]
                 + [_fmt(b.get(k), ".3f") for k, _ in family.metrics] + [_fmt(keep, ".0%"), ""])
        lines.append("| " + " | ".join(cells) + " |")
    threads = stages[0].get("latency_threads") if stages else None
    lines += [f"\n{note}" for note in family.report_notes(report)]
    lines += ["", f"![{primary_label} vs speed]({PLOT})", "",
              f"full ms: median of one full forward at batch 1 in fp32 with {threads} thread(s). MACs: distilkit.profile "
              "(exact, attention included). train s: optimisation wall time of the stage.", ""]
    return "\n".join(lines)


def _baselines(report: dict[str, Any]) -> list[dict[str, Any]]:
    return report.get("baselines") or ([report["baseline"]] if report.get("baseline") else [])


def plot_auc_vs_fps(report: dict[str, Any], path: str, family: ModelFamily) -> None:
    """Scatter of the primary metric against speed (the family's), one labelled point per stage and per baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (primary, label), (speed_key, speed_label) = family.metrics[0], family.speed
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    pts = [(s[speed_key], s[primary], s["name"]) for s in report["stages"]
           if s.get(speed_key) and s.get(primary) is not None]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", color="tab:blue", label="stages")
        for fps, value, name in pts:
            ax.annotate(name, (fps, value), textcoords="offset points", xytext=(4, 4), fontsize=8)
    for b in _baselines(report):
        if b.get("fps"):
            ax.plot([b["fps"]], [b[primary]], "s", color="tab:gray")
            ax.annotate(b["name"], (b["fps"], b[primary]), textcoords="offset points", xytext=(4, -10), fontsize=8,
                        color="tab:gray")
        else:
            ax.axhline(b[primary], color="tab:gray", ls="--", label=f"{b['name']} baseline")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(f"CPU {speed_label} (log scale)")
    ax.set_ylabel(label)
    ax.set_title(f"{report['recipe']} ({report['budget']}): accuracy vs speed per stage")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def write_report(out_dir: str, report: dict[str, Any], family: ModelFamily) -> None:
    write_json_atomic(os.path.join(out_dir, REPORT_JSON), report)
    plot_auc_vs_fps(report, os.path.join(out_dir, PLOT), family)
    write_atomic(os.path.join(out_dir, REPORT_MD), markdown(report, family))


def print_summary(console: Any, report: dict[str, Any], family: ModelFamily) -> None:
    """The end-of-run table on `console`: every stage and reference row, one row each."""
    from rich.table import Table

    speed_key = family.speed[0]
    own_speed = [] if speed_key == "fps" else [speed_key]  # a family timing something besides the full forward
    table = Table(title=f"{report['recipe']} ({report['budget']}): {report['total_seconds'] / 60:.1f} min")
    for col in ("stage", "depth", "MLP r", "params", "MMACs", "FPS full", *(family.speed[1] for _ in own_speed),
                *(label for _, label in family.metrics)):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for s in report["stages"]:
        table.add_row(s["name"], str(s["depth"]), f"{s['mlp_ratio']:g}", f"{s['params']:,}", f"{s['macs'] / 1e6:,.1f}",
                      f"{s['fps']:.1f}", *(_fmt(s.get(k), ".1f") for k in own_speed),
                      *(_fmt(s.get(k), ".3f") for k, _ in family.metrics))
    for base in _baselines(report):
        table.add_row(base["name"], "", "", "", "", _fmt(base.get("fps"), ".1f") if not own_speed else "",
                      *(_fmt(base.get("fps"), ".1f") for _ in own_speed), *(_fmt(base.get(k), ".3f") for k, _ in family.metrics))
    console.print(table)
