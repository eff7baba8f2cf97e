"""Per-frame latency of MixFormerV2-S/-B on CPU: full forward vs template-cached path, with a roofline.

Run: python benchmarks/tracker_speed.py [--frames 40] [--warmup 5] [--models mixformerv2-s mixformerv2-b] [--threads N]
         [--block 8] [--no-compile] [--out benchmarks/results/tracker_speed.txt]
Random weights (speed does not depend on them). Every path runs with the default linear kernel
(`F.linear`), with prepacked oneDNN weights (`distilkit.prepack`, what `MixFormerV2Tracker` uses by
default) and, where a C++ compiler is found, compiled by TorchInductor with frozen weights
(`distilkit.compiled`, `MixFormerV2Tracker(compile=True)`): one copy of the model each. Paths take
turns in blocks of `--block` consecutive frames, so that load from other processes hits all of them
alike while each block runs as a tracker does, one model frame after frame; the first frame of each
block (caches still full of the previous path's weights), warm-up frames and compilation are
excluded. The speed-up compares a path with the full forward on the same kernels. The roofline is the
per-frame lower bound 2·MACs / (measured dense fp32 matmul FLOP/s).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from distilkit.compiled import FrozenFunction, compiler_available
from distilkit.prepack import prepack_available, prepack_linears
from distilkit.trackers.mixformerv2 import MixFormerV2Config, build_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import count, run_main, write_atomic  # noqa: E402


def block_macs(d: int, hidden: int, queries: int, keys: int, proj_tokens: int) -> int:
    """One block: qkv on `proj_tokens`, attention of `queries` over `keys`, proj + MLP on `queries`."""
    return proj_tokens * 3 * d * d + 2 * queries * keys * d + queries * (d * d + 2 * d * hidden)


def analytic_macs(cfg: MixFormerV2Config, path: str) -> int:
    """Multiply-accumulates of one frame (matmul/conv/attention only; norms and activations excluded).
    path: "full" (all tokens, P-MAM), "cached" (search + prediction tokens only, last block trimmed to
    the prediction tokens) or "cached-untrimmed"."""
    if cfg.head != "t4":
        raise ValueError("analytic MACs are implemented for T4-head models only")
    d, p = cfg.embed_dim, cfg.num_pred_tokens
    nt = cfg.template_tokens * (1 + cfg.num_online_templates)
    s = cfg.search_feat_size**2
    n = nt + s + p
    patch = 3 * cfg.patch_size**2 * d
    hid = cfg.head_hidden or d
    heads = 4 * (d * hid + hid * cfg.bins) + (4 * (d * d + d) if cfg.score_head else 0)
    hidden = cfg.block_mlp_hidden
    if path == "full":
        macs = (nt + s) * patch
        for h in hidden:
            macs += n * 3 * d * d + 2 * nt * nt * d + 2 * (s + p) * n * d + n * (d * d + 2 * d * h)
        return macs + heads
    macs = s * patch
    for i, h in enumerate(hidden):
        trimmed = path == "cached" and i == len(hidden) - 1
        macs += block_macs(d, h, p if trimmed else s + p, n, s + p)
    return macs + heads


def matmul_peak_gflops(reps: int = 5) -> float:
    """Best sustained fp32 GEMM rate over a few shapes (square and the model's own linear shapes), with
    the default kernel and, where available, the prepacked oneDNN one: the roofline uses the faster."""
    best = 0.0
    for m, k, n in ((1024, 1024, 1024), (2048, 2048, 2048), (200, 768, 2304), (329, 768, 3072)):
        a, w = torch.randn(m, k), torch.randn(n, k)
        kernels = [lambda: F.linear(a, w)]
        if prepack_available():
            packed = torch.ops.mkldnn._reorder_linear_weight(w, m)
            kernels.append(lambda: torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], ""))
        inner = max(1, int(4e9 / (2 * m * k * n)))
        for kernel in kernels:
            for _ in range(2):
                kernel()
            for _ in range(reps):
                t0 = time.perf_counter()
                for _ in range(inner):
                    kernel()
                best = max(best, 2 * m * k * n * inner / (time.perf_counter() - t0) / 1e9)
    return best


def _full_forward(model: torch.nn.Module, template: torch.Tensor, online: torch.Tensor, search: torch.Tensor) -> dict:
    return model(template, online, search)


def time_paths(name: str, frames: int, warmup: int, block: int, compile_: bool) -> tuple[MixFormerV2Config, dict[tuple[str, str], list[float]]]:
    """Per-frame times in ms keyed by (kernel, path)."""
    kernels = ["default"] + (["prepacked"] if prepack_available() else []) + (["compiled"] if compile_ else [])
    models = {}
    for kernel in kernels:
        torch.manual_seed(0)
        models[kernel] = build_model(name).eval()
    cfg = models["default"].config
    if "prepacked" in models:
        prepack_linears(models["prepacked"], batch_hint=cfg.search_feat_size**2 + cfg.num_pred_tokens)
    full = dict(models)
    if "compiled" in models:
        models["compiled"].compile_search()
        full["compiled"] = FrozenFunction(_full_forward, models["compiled"])
    t = torch.randn(1, 3, cfg.template_size, cfg.template_size)
    s = torch.randn(1, 3, cfg.search_size, cfg.search_size)
    paths = {}
    for kernel, model in models.items():
        paths[kernel, "full"] = lambda fn=full[kernel]: fn(t, t, s)
        paths[kernel, "cached"] = lambda model=model: model.forward_search(s)
        paths[kernel, "cached-untrimmed"] = lambda model=model: model.forward_search(s, skip_unused=False)
    times: dict[tuple[str, str], list[float]] = {k: [] for k in paths}
    with torch.inference_mode():
        ref = models["default"](t, t, s)["boxes"]
        for model in models.values():
            model.set_templates(t, t)
            assert torch.allclose(model.forward_search(s)["boxes"], ref, atol=1e-5)
        for fn in full.values():
            assert torch.allclose(fn(t, t, s)["boxes"], ref, atol=1e-5)
        for fn in paths.values():  # the first call of a compiled path compiles it
            for _ in range(warmup):
                fn()
        block = max(1, min(block, frames))
        for _ in range(math.ceil(frames / block)):
            for key, fn in paths.items():
                fn()  # untimed: right after another path the caches hold that model's weights
                for _ in range(block):
                    t0 = time.perf_counter()
                    fn()
                    times[key].append((time.perf_counter() - t0) * 1e3)
    return cfg, times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=count(1), default=40)
    ap.add_argument("--warmup", type=count(0), default=5)
    ap.add_argument("--block", type=count(1), default=8, help="consecutive frames per path and round")
    ap.add_argument("--models", nargs="+", default=["mixformerv2-s", "mixformerv2-b"])
    ap.add_argument("--threads", type=count(1), default=os.cpu_count() or 1, help="torch threads (default: cores)")
    ap.add_argument("--no-compile", action="store_true", help="skip the TorchInductor-compiled rows")
    ap.add_argument("--out", type=Path, default=None, help="also write the printed text to this file (atomically)")
    args = ap.parse_args()
    threads = args.threads
    torch.set_num_threads(threads)
    console = Console(width=150, record=True)
    peak = matmul_peak_gflops()
    console.print(f"torch {torch.__version__}, {threads} threads; dense fp32 matmul peak {peak:.0f} GFLOP/s")
    table = Table(title="per-frame latency (ms), batch 1, fp32")
    for col in ("model", "kernels", "path", "GMAC", "median", "p90", "FPS", "roofline", "median/roofline", "speed-up"):
        table.add_column(col, justify="right")
    compile_ = not args.no_compile and compiler_available()
    if not args.no_compile and not compile_:
        console.print("no C++ compiler found: the compiled rows are left out")
    for name in args.models:
        cfg, times = time_paths(name, args.frames, args.warmup, args.block, compile_)
        for (kernel, path), ts in times.items():
            full_median = float(np.median(times[kernel, "full"]))
            macs = analytic_macs(cfg, path)
            med, p90 = float(np.median(ts)), float(np.percentile(ts, 90))
            bound = 2 * macs / (peak * 1e9) * 1e3
            table.add_row(name, kernel, path, f"{macs / 1e9:.3f}", f"{med:.1f}", f"{p90:.1f}", f"{1e3 / med:.1f}",
                          f"{bound:.1f}", f"{med / bound:.2f}x", f"{full_median / med:.2f}x")
    console.print(table)
    console.print("speed-up = full-forward median / path median, same kernels; roofline = 2·MACs / matmul peak. "
                  "cached: template K/V reused, last block computes the 4 prediction tokens only. "
                  "prepacked: distilkit.prepack (oneDNN weights reordered once), MixFormerV2Tracker's default. "
                  "compiled: distilkit.compiled (TorchInductor, frozen weights, C++ wrapper), MixFormerV2Tracker(compile=True).")
    if args.out is not None:
        console.print(f"written to {write_atomic(args.out, console.export_text())}")


if __name__ == "__main__":
    run_main(main)
