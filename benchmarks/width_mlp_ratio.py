"""What MLP-ratio reduction buys: MixFormerV2-S backbone at MLP ratio 4 vs the same model sliced to 1.

Run: python benchmarks/width_mlp_ratio.py [--iters 20] [--warmup 3] [--threads 2] [--out benchmarks/results/width_mlp_ratio.txt]
Random weights (speed does not depend on them). The r4 and r1 models are timed round-robin, forward by
forward, so load from other processes hits both alike; the ratio is the figure to read. Also times
the progressive pruner's gated forward (γ = 0.5) against the plain r4 forward: the gate's overhead.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from distilkit.schedule import LinearSchedule
from distilkit.trackers.mixformerv2 import build_model
from distilkit.width import ProgressiveWidthPruner, reduce_mlp_ratio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import count, run_main, write_atomic  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=count(1), default=20)
    parser.add_argument("--warmup", type=count(0), default=3)
    parser.add_argument("--threads", type=count(1), default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the printed table to this file (atomically)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    r4 = build_model("mixformerv2-s", mlp_ratio=4.0).eval()
    r1 = copy.deepcopy(r4)
    report = reduce_mlp_ratio(r1, 1.0, blocks="backbone.blocks")
    gated = copy.deepcopy(r4)
    pruner = ProgressiveWidthPruner(gated, 1.0, blocks="backbone.blocks", schedule=LinearSchedule(m=2))
    pruner.set_epoch(1)
    cfg = r4.config
    inputs = (
        torch.randn(1, 3, cfg.template_size, cfg.template_size),
        torch.randn(1, 3, cfg.template_size, cfg.template_size),
        torch.randn(1, 3, cfg.search_size, cfg.search_size),
    )
    models = {"MLP ratio 4": r4, "MLP ratio 1 (sliced)": r1, "ratio 4, gated γ=0.5": gated}
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for step in range(args.warmup + args.iters):
            for name, model in models.items():
                start = time.perf_counter()
                model(*inputs)
                if step >= args.warmup:
                    times[name].append((time.perf_counter() - start) * 1e3)

    base = float(np.median(times["MLP ratio 4"]))
    table = Table(title=f"MixFormerV2-S forward, {args.threads} threads, median of {args.iters}")
    for col in ("model", "params", "median ms", "vs ratio 4"):
        table.add_column(col, justify="left" if col == "model" else "right")
    params = {"MLP ratio 4": report.params_before, "MLP ratio 1 (sliced)": report.params_after,
              "ratio 4, gated γ=0.5": report.params_before}
    for name in models:
        median = float(np.median(times[name]))
        table.add_row(name, f"{params[name]:,}", f"{median:.1f}", f"{median / base:.2f}x")
    console = Console(record=True)
    console.print(table)
    if args.out is not None:
        console.print(f"written to {write_atomic(args.out, console.export_text())}")


if __name__ == "__main__":
    run_main(main)
