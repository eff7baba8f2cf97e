"""Params / MACs / CPU latency of every MixFormerV2 config and two timm ViTs, distilkit next to fvcore.

    python benchmarks/flops_table.py [--out benchmarks/results/flops_table.md] [--quick] [--iters 10] [--threads 2]

Writes a Markdown table (atomically) and prints it. `--quick` uses the tiny configs and ViT-Ti with
two timed runs: a CI smoke test. fvcore skips scaled_dot_product_attention and counts norms, so the
"ours - fvcore" column is the attention it misses minus the norms it adds.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from _common import RESULTS_DIR, count, run_main, write_atomic

TRACKERS = ["mixvit-b", "mixvit-b-corner", "mixformerv2-12l", "mixformerv2-b", "mixformerv2-s"]
VITS = ["timm:vit_small_patch16_224", "timm:vit_base_patch16_224"]
QUICK_VITS = ["timm:vit_tiny_patch16_224"]


def measure(spec: str, iters: int, threads: int | None) -> dict[str, object]:
    """One row: params, our MACs, fvcore's MACs, latency (None when iters == 0)."""
    from distilkit.commands.models import resolve_model
    from distilkit.profile import latency, profile
    from distilkit.profile.reference import fvcore_macs

    model, inputs = resolve_model(spec)
    prof = profile(model, inputs)
    fv = fvcore_macs(model, inputs)[""]
    timing = latency(model, inputs, threads=threads, warmup=2, iters=iters) if iters else None
    return {"model": spec, "params": prof.params, "macs": prof.macs, "fvcore": fv, "timing": timing}


def markdown(rows: list[dict[str, object]], load: float) -> str:
    """The table, MACs in G with exact integers beside them; `load` is the 1-min load average at the start."""
    lines = [
        "| model | params | MACs (distilkit) | MACs (fvcore) | ours - fvcore | CPU median ms | CPU p90 ms | FPS | threads |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        t = r["timing"]
        lat = [f"{t.median_ms:.1f}", f"{t.p90_ms:.1f}", f"{t.fps:.1f}", str(t.threads)] if t else ["-"] * 4
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['macs']:,} ({r['macs'] / 1e9:.3f} G) | {r['fvcore']:,} | "
            f"{r['macs'] - r['fvcore']:+,} | " + " | ".join(lat) + " |"
        )
    lines.append("")
    lines.append("MACs = multiply-accumulates of linear, conv, matmul and attention (QK^T, AV; asymmetric attention by the "
                 "pairs computed); FLOPs = 2 x MACs. fvcore counts MACs too but skips scaled_dot_product_attention and "
                 "adds LayerNorm/BatchNorm/upsampling. Latency: one full forward (batch 1), fp32, torch.inference_mode; "
                 f"{os.cpu_count()} CPUs, load average {load:.1f} when the run started (other processes slow it down).")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "flops_table.md")
    parser.add_argument("--quick", action="store_true", help="tiny configs and ViT-Ti, 2 timed runs (CI smoke test)")
    parser.add_argument("--iters", type=count(0), default=None, help="timed runs per model (default 10, quick 2; 0 = no latency)")
    parser.add_argument("--threads", type=count(1), default=None, help="intra-op threads for latency (default: torch's)")
    args = parser.parse_args()
    specs = [f"{n}-tiny" for n in TRACKERS] + QUICK_VITS if args.quick else TRACKERS + VITS
    iters = args.iters if args.iters is not None else (2 if args.quick else 10)
    load = os.getloadavg()[0]
    rows = []
    for spec in specs:
        start = time.perf_counter()
        rows.append(measure(spec, iters, args.threads))
        print(f"measured {spec} in {time.perf_counter() - start:.1f} s", flush=True)
    text = markdown(rows, load)
    write_atomic(args.out, text)
    print(text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    run_main(main)
