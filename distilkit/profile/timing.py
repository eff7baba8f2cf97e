"""`latency(model, inputs)`: wall-clock forward time (median, p90) under inference mode; `time_calls(fn)`: the same
statistics for any callable."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from torch import nn

from distilkit.checks import as_int
from distilkit.inputs import Inputs, call_model


@dataclass(frozen=True)
class Timing:
    """Forward latency over `iters` timed runs (warm-up runs excluded), in milliseconds."""

    median_ms: float
    p90_ms: float
    min_ms: float
    fps: float
    threads: int
    warmup: int
    iters: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"median {self.median_ms:.2f} ms, p90 {self.p90_ms:.2f} ms, {self.fps:.1f} FPS "
            f"({self.threads} threads, {self.iters} runs after {self.warmup} warm-up)"
        )


def latency(model: nn.Module, inputs: Inputs, threads: int | None = None, warmup: int = 5, iters: int = 20) -> Timing:
    """Time `iters` forwards of `model` in eval mode with `threads` intra-op threads (default: torch's)."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return time_calls(lambda: call_model(model, inputs), threads, warmup, iters)
    finally:
        model.train(was_training)


def time_calls(fn: Callable[[], Any], threads: int | None = None, warmup: int = 5, iters: int = 20) -> Timing:
    """Time `iters` calls of `fn` (after `warmup` untimed ones) with `threads` intra-op threads (default: torch's):
    for anything that is not one forward, e.g. a tracker's whole per-frame step."""
    import torch

    iters, warmup = as_int(iters, "latency iters", minimum=1), as_int(warmup, "latency warmup", minimum=0)
    if threads is not None:
        threads = as_int(threads, "latency threads", minimum=1)
    previous_threads = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        used = torch.get_num_threads()
        times = []
        for i in range(warmup + iters):
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    finally:
        torch.set_num_threads(previous_threads)
    median = statistics.median(times)
    p90 = statistics.quantiles(times, n=10, method="inclusive")[-1] if len(times) > 1 else times[0]
    return Timing(median, p90, min(times), 1e3 / median, used, warmup, iters)
