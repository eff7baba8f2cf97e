"""Per-frame latency of MixFormerV2-S/-B on CPU: full forward vs template-cached path, with a roofline.

Run: python benchmarks/tracker_speed.py [--frames 40] [--warmup 5] [--models mixformerv2-s mixformerv2-b] [--threads N]
         [--block 8] [--no-compile] [--no-native] [--no-onnx] [--isa native|avx2|both]
         [--out benchmarks/results/tracker_speed.txt]
Random weights (speed does not depend on them). Every path runs with the default linear kernel
(`F.linear`), with prepacked oneDNN weights (`distilkit.prepack`, what `MixFormerV2Tracker` uses by
default) and, where a C++ compiler is found, compiled by TorchInductor with frozen weights
(`distilkit.compiled`), once with SDPA attention and once with the cached path's attention in
distilkit's native kernel (`distilkit.kernels`, built at run time; what `MixFormerV2Tracker(compile=True)`
runs), and, with onnxruntime installed, exported to ONNX (`distilkit.deploy`: the graphs `distilkit export`
writes, fp32 and dynamic int8) and run by onnxruntime: one copy of the model each. Paths take turns in
blocks of `--block` consecutive frames, so that load from other processes hits all of them alike while
each block runs as a tracker does, one model frame after frame; the first frame of each block (caches
still full of the previous path's weights), warm-up frames and compilation are excluded. The speed-up
compares a path with the full forward on the same kernels. The roofline is the per-frame lower bound
2·MACs / (dense fp32 matmul FLOP/s): the fastest GEMM found in a burst scan of shapes and kernels is
timed again in every round-robin block beside the paths, and its median rate is the one the paths are
held to (the burst rate comes from the machine's quietest moments, which the paths' medians do not;
both ratios are printed); int8 rows are held to the same fp32 bound, which integer GEMMs can beat.
`--isa avx2` runs the whole table as a CPU without AVX-512 would (the variables of .ci/avx2.env: ATen,
MKL, oneDNN and the native kernel's AVX2 build), `--isa both` once each way, so that both instruction
sets are measured on an AVX-512 machine.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from distilkit.compiled import FrozenFunction, compiler_available
from distilkit.deploy.export import SearchGraph, TemplateGraph, export_graph, quantize_graph
from distilkit.deploy.runtime import inference_session
from distilkit.heap import retain_freed_memory
from distilkit.kernels import load_native, native_status, use_native
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


@dataclass
class Gemm:
    """One dense fp32 GEMM (a shape and kernel): `run()` does `inner` calls of `flops` each."""

    label: str
    flops: int
    inner: int
    call: Callable[[], object]

    def run(self) -> None:
        for _ in range(self.inner):
            self.call()

    def timed_gflops(self) -> float:
        """Run once and return the rate reached (GFLOP/s)."""
        t0 = time.perf_counter()
        self.run()
        return self.flops * self.inner / (time.perf_counter() - t0) / 1e9


def roofline_ms(macs: int, gflops: float) -> float:
    """The per-frame lower bound of `macs` multiply-accumulates at `gflops`."""
    return 2 * macs / (gflops * 1e9) * 1e3


def fastest_gemm(reps: int = 5) -> tuple[float, Gemm]:
    """Best burst fp32 GEMM rate (GFLOP/s) over a few shapes (square and the model's own linear shapes)
    and kernels (default; prepacked oneDNN; prepacked MKL, what compiled programs call), and that GEMM."""
    best, fastest = 0.0, None
    for m, k, n in ((1024, 1024, 1024), (2048, 2048, 2048), (200, 768, 2304), (329, 768, 3072)):
        a, w = torch.randn(m, k), torch.randn(n, k)
        kernels = {"F.linear": lambda a=a, w=w: F.linear(a, w)}
        if prepack_available():
            packed = torch.ops.mkldnn._reorder_linear_weight(w, m)
            kernels["oneDNN prepacked"] = lambda a=a, p=packed: torch.ops.mkldnn._linear_pointwise(a, p, None, "none", [], "")
        if torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear"):
            packed = torch.ops.mkl._mkl_reorder_linear_weight(w, m)
            kernels["MKL prepacked"] = lambda a=a, w=w, p=packed, m=m: torch.ops.mkl._mkl_linear(a, p, w, None, m)
        flops = 2 * m * k * n
        for label, kernel in kernels.items():
            gemm = Gemm(f"{m}x{k}x{n} {label}", flops, max(1, int(4e9 / flops)), kernel)
            gemm.run()
            for _ in range(reps):
                rate = gemm.timed_gflops()
                if rate > best:
                    best, fastest = rate, gemm
    assert fastest is not None
    return best, fastest


def _full_forward(model: torch.nn.Module, template: torch.Tensor, online: torch.Tensor, search: torch.Tensor) -> dict:
    return model(template, online, search)


ONNX_KERNELS = {"onnxruntime": False, "onnxruntime int8": True}
#: Seconds between two paths' blocks: long enough for onnxruntime's spinning idle threads to go to sleep, so
#: that they do not take the cores from the next block (torch's OpenMP threads); not timed.
IDLE_BETWEEN_BLOCKS = 0.05


class FullGraph(torch.nn.Module):
    """The full forward as one graph (boxes only), for the onnxruntime rows' full-forward baseline."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, template: torch.Tensor, online: torch.Tensor, search: torch.Tensor) -> torch.Tensor:
        return self.model(template, online, search)["boxes"]


def onnx_paths(model: torch.nn.Module, t: torch.Tensor, s: torch.Tensor, folder: Path, int8: bool,
               threads: int) -> dict[str, Callable[[], object]]:
    """full / cached / cached-untrimmed of `model` exported to ONNX (as `distilkit export` does, int8 optional) and
    run by onnxruntime on `threads` threads; the templates graph runs once, as a tracker runs it."""
    online = t.unsqueeze(1)
    graphs = {
        "templates": (TemplateGraph(model), (t, online), ["template", "online_template"], ["keys", "values"]),
        "full": (FullGraph(model), (t, online, s), ["template", "online_template", "search"], ["boxes"]),
    }
    with torch.no_grad():
        keys, values = TemplateGraph(model)(t, online)
    for path, skip in (("cached", True), ("cached-untrimmed", False)):
        graphs[path] = (SearchGraph(model, skip_unused=skip), (s, keys, values), ["search", "keys", "values"], ["boxes"])
    sessions = {}
    for path, (module, args, inputs, outputs) in graphs.items():
        file = folder / f"{path}.onnx"
        export_graph(module, args, file, inputs, outputs, {}, 17)
        if int8:
            quantize_graph(file)
        sessions[path] = inference_session(file, threads)  # as OnnxTracker runs it: idle threads spin a moment
    feeds_t = {"template": t.numpy(), "online_template": online.numpy()}
    k, v = sessions["templates"].run(None, feeds_t)
    feeds = {"search": s.numpy(), "keys": k, "values": v}
    full_feeds = {**feeds_t, "search": s.numpy()}
    return {
        "full": lambda: sessions["full"].run(None, full_feeds),
        "cached": lambda: sessions["cached"].run(None, feeds),
        "cached-untrimmed": lambda: sessions["cached-untrimmed"].run(None, feeds),
    }


def time_paths(name: str, frames: int, warmup: int, block: int, compile_: bool, native: bool, onnx: bool,
               gemm: Gemm) -> tuple[MixFormerV2Config, dict[tuple[str, str], list[float]], list[float]]:
    """Per-frame times in ms keyed by (kernel, path), and the GFLOP/s of `gemm` timed in the same
    round-robin blocks (so the roofline rate and the paths meet the same load from other processes)."""
    kernels = ["default"] + (["prepacked"] if prepack_available() else [])
    kernels += (["compiled"] if compile_ else []) + (["compiled+native"] if compile_ and native else [])
    uses_native = {kernel: kernel.endswith("+native") for kernel in kernels}
    models = {}
    for kernel in kernels:
        torch.manual_seed(0)
        models[kernel] = build_model(name).eval()
    cfg = models["default"].config
    if "prepacked" in models:
        prepack_linears(models["prepacked"], batch_hint=cfg.search_feat_size**2 + cfg.num_pred_tokens)
    full = dict(models)
    for kernel, model in models.items():
        if kernel.startswith("compiled"):
            model.compile_search()
            full[kernel] = FrozenFunction(_full_forward, model)
    t = torch.randn(1, 3, cfg.template_size, cfg.template_size)
    s = torch.randn(1, 3, cfg.search_size, cfg.search_size)
    paths = {}
    for kernel, model in models.items():
        paths[kernel, "full"] = lambda fn=full[kernel]: fn(t, t, s)
        paths[kernel, "cached"] = lambda model=model: model.forward_search(s)
        paths[kernel, "cached-untrimmed"] = lambda model=model: model.forward_search(s, skip_unused=False)
    exported = tempfile.TemporaryDirectory(prefix="tracker_speed_onnx_")
    for kernel, int8 in ONNX_KERNELS.items() if onnx else ():
        folder = Path(exported.name) / kernel.replace(" ", "-")
        folder.mkdir()
        for path, fn in onnx_paths(models["default"], t, s, folder, int8, torch.get_num_threads()).items():
            paths[kernel, path] = fn
    times: dict[tuple[str, str], list[float]] = {k: [] for k in paths}
    rates: list[float] = []
    with torch.inference_mode():
        ref = models["default"](t, t, s)["boxes"]
        if onnx:
            for path in ("full", "cached", "cached-untrimmed"):
                assert np.allclose(paths["onnxruntime", path]()[0], ref.numpy(), atol=1e-5)
                for kernel in ONNX_KERNELS:
                    for _ in range(warmup):
                        paths[kernel, path]()
        for kernel, model in models.items():
            with use_native(uses_native[kernel]):  # each model always runs with its own attention kernel
                model.set_templates(t, t)
                assert torch.allclose(model.forward_search(s)["boxes"], ref, atol=1e-5)
                assert torch.allclose(full[kernel](t, t, s)["boxes"], ref, atol=1e-5)
                for path in ("full", "cached", "cached-untrimmed"):  # the first call of a compiled path compiles it
                    for _ in range(warmup):
                        paths[kernel, path]()
        block = max(1, min(block, frames))
        for _ in range(math.ceil(frames / block)):
            for (kernel, path), fn in paths.items():
                with use_native(uses_native.get(kernel, False)):
                    time.sleep(IDLE_BETWEEN_BLOCKS)  # the previous path's idle threads (onnxruntime spins) stop first
                    fn()  # untimed: right after another path the caches hold that model's weights
                    for _ in range(block):
                        t0 = time.perf_counter()
                        fn()
                        times[kernel, path].append((time.perf_counter() - t0) * 1e3)
            gemm.run()
            rates.extend(gemm.timed_gflops() for _ in range(block))
    exported.cleanup()
    return cfg, times, rates


def fastest_cached(name: str, cfg: MixFormerV2Config, times: dict[tuple[str, str], list[float]], rate: float,
                   peak: float) -> str:
    """One line on the model's fastest cached path: its median, the speed-up over the full forward on the
    same kernels and the two roofline ratios (the figures speed targets are stated in)."""
    kernel = min((k for k, path in times if path == "cached"), key=lambda k: float(np.median(times[k, "cached"])))
    med, full = float(np.median(times[kernel, "cached"])), float(np.median(times[kernel, "full"]))
    macs = analytic_macs(cfg, "cached")
    return (f"{name}: fastest cached path {kernel}, {med:.1f} ms; {full / med:.2f}x its full forward, "
            f"{med / roofline_ms(macs, rate):.2f}x the roofline ({med / roofline_ms(macs, peak):.2f}x "
            "against the burst peak)")


ISA_CHOICES = ("native", "avx2", "both")
AVX2_ENV = Path(__file__).resolve().parents[1] / ".ci" / "avx2.env"


def avx2_environment() -> dict[str, str]:
    """The variables of .ci/avx2.env (one definition for CI and this benchmark), minus the test-only ones."""
    pairs = (line.split("=", 1) for line in AVX2_ENV.read_text().splitlines() if line.strip() and not line.startswith("#"))
    return {key: value for key, value in pairs if not key.startswith("DISTILKIT_TEST")}


def rerun_per_isa(isa: str, out: Path | None) -> None:
    """Run this script again once per instruction set asked for (the variables must be set before torch loads);
    the tables are printed and, with --out, written one after the other."""
    cleaned, skip = [], False
    for a in sys.argv[1:]:  # drop --isa X and --out X: the children print, this process writes
        if skip:
            skip = False
        elif a in ("--isa", "--out"):
            skip = True
        elif not a.startswith(("--isa=", "--out=")):
            cleaned.append(a)
    texts = []
    for which in (("native", "avx2") if isa == "both" else (isa,)):
        env = {**os.environ, **(avx2_environment() if which == "avx2" else {})}
        done = subprocess.run([sys.executable, __file__, *cleaned], env=env, capture_output=True, text=True)
        sys.stderr.write(done.stderr)
        if done.returncode:
            sys.exit(done.returncode)
        header = f"== instruction set: {which}" + (f" ({' '.join(f'{k}={v}' for k, v in avx2_environment().items())})"
                                                   if which == "avx2" else "") + " =="
        texts.append(f"{header}\n{done.stdout}")
        print(texts[-1], flush=True)
    if out is not None:
        print(f"written to {write_atomic(out, ''.join(texts))}")


def onnxruntime_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=count(1), default=40)
    ap.add_argument("--warmup", type=count(0), default=5)
    ap.add_argument("--block", type=count(1), default=8, help="consecutive frames per path and round")
    ap.add_argument("--models", nargs="+", default=["mixformerv2-s", "mixformerv2-b"])
    ap.add_argument("--threads", type=count(1), default=os.cpu_count() or 1, help="torch threads (default: cores)")
    ap.add_argument("--no-compile", action="store_true", help="skip the TorchInductor-compiled rows")
    ap.add_argument("--no-native", action="store_true", help="skip the rows with distilkit's native attention kernel")
    ap.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime rows")
    ap.add_argument("--isa", choices=ISA_CHOICES, default="native",
                    help="instruction set: the CPU's own, AVX2 only (.ci/avx2.env), or both one after the other")
    ap.add_argument("--out", type=Path, default=None, help="also write the printed text to this file (atomically)")
    args = ap.parse_args()
    if args.isa != "native":
        rerun_per_isa(args.isa, args.out)
        return
    threads = args.threads
    torch.set_num_threads(threads)
    console = Console(width=150, record=True)
    heap = "freed memory kept (distilkit.heap)" if retain_freed_memory() else "malloc defaults (not glibc)"
    peak, gemm = fastest_gemm()
    console.print(f"torch {torch.__version__} (ATen {torch.backends.cpu.get_cpu_capability()}), {threads} threads, {heap}; "
                  f"dense fp32 matmul peak {peak:.0f} GFLOP/s "
                  f"(best burst, {gemm.label})")
    table = Table(title="per-frame latency (ms), batch 1, fp32")
    for col in ("model", "kernels", "path", "GMAC", "median", "p90", "FPS", "roofline", "median/roofline",
                "vs burst peak", "speed-up"):
        table.add_column(col, justify="right")
    compile_ = not args.no_compile and compiler_available()
    if not args.no_compile and not compile_:
        console.print("no C++ compiler found: the compiled rows are left out")
    native = compile_ and not args.no_native and load_native()
    console.print(f"native attention kernel (distilkit.kernels): {native_status()}")
    onnx = not args.no_onnx and onnxruntime_version() is not None
    if not args.no_onnx and not onnx:
        console.print("onnxruntime is not installed (pip install 'distilkit[deploy]'): the onnxruntime rows are left out")
    elif onnx:
        console.print(f"onnxruntime {onnxruntime_version()} (its MLAS kernels pick the instruction set by CPUID; "
                      "no variable limits them, so under --isa avx2 on an AVX-512 CPU they still use AVX-512)")
    sustained, fastest = {}, []
    for name in args.models:
        cfg, times, rates = time_paths(name, args.frames, args.warmup, args.block, compile_, native, onnx, gemm)
        sustained[name] = rate = float(np.median(rates))
        fastest.append(fastest_cached(name, cfg, times, rate, peak))
        for (kernel, path), ts in times.items():
            full_median = float(np.median(times[kernel, "full"]))
            macs = analytic_macs(cfg, path)
            med, p90 = float(np.median(ts)), float(np.percentile(ts, 90))
            bound, burst_bound = roofline_ms(macs, rate), roofline_ms(macs, peak)
            table.add_row(name, kernel, path, f"{macs / 1e9:.3f}", f"{med:.1f}", f"{p90:.1f}", f"{1e3 / med:.1f}",
                          f"{bound:.1f}", f"{med / bound:.2f}x", f"{med / burst_bound:.2f}x", f"{full_median / med:.2f}x")
    console.print(table)
    console.print("roofline = 2·MACs / the matmul rate sustained in this run: the median GFLOP/s of the peak GEMM "
                  "timed in the same round-robin blocks as the paths ("
                  + ", ".join(f"{name} {rate:.0f}" for name, rate in sustained.items())
                  + f" GFLOP/s); vs burst peak = median / (2·MACs / {peak:.0f} GFLOP/s). "
                  "speed-up = full-forward median / path median, same kernels. "
                  "cached: template K/V reused, last block computes the 4 prediction tokens only. "
                  "prepacked: distilkit.prepack (oneDNN weights reordered once), MixFormerV2Tracker's default. "
                  "compiled: distilkit.compiled (TorchInductor, frozen weights, C++ wrapper), attention by SDPA. "
                  "compiled+native: the same with the cached path's attention by distilkit.kernels.qkv_prefix_attention's "
                  "native kernel, MixFormerV2Tracker(compile=True). "
                  "onnxruntime: the graphs distilkit export writes (templates.onnx once, search.onnx per frame; full: the "
                  "whole forward as one graph), what distilkit.deploy.OnnxTracker runs; int8: dynamic int8 weights "
                  "(distilkit export --int8).")
    for line in fastest:
        console.print(line)
    if args.out is not None:
        console.print(f"written to {write_atomic(args.out, console.export_text())}")


if __name__ == "__main__":
    run_main(main)
