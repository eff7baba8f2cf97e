"""latency(): warm-up excluded, inference mode, thread count applied and restored."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distilkit.errors import DistilkitError
from distilkit.profile import Timing, latency


class Probe(nn.Module):
    """Records what each forward saw: inference mode, thread count, training flag."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.seen: list[tuple[bool, int, bool]] = []

    def forward(self, x, scale=1.0):
        self.seen.append((torch.is_inference_mode_enabled(), torch.get_num_threads(), self.training))
        return self.lin(x) * scale


def test_latency_runs_warmup_plus_iters_under_inference_mode():
    model = Probe().train()
    before = torch.get_num_threads()
    timing = latency(model, {"x": torch.randn(2, 8), "scale": 2.0}, threads=1, warmup=3, iters=7)
    assert isinstance(timing, Timing)
    assert len(model.seen) == 10
    assert all(inference and threads == 1 and not training for inference, threads, training in model.seen)
    assert torch.get_num_threads() == before and model.training
    assert (timing.threads, timing.warmup, timing.iters) == (1, 3, 7)
    assert 0 < timing.min_ms <= timing.median_ms <= timing.p90_ms
    assert timing.fps == pytest.approx(1000 / timing.median_ms)
    assert set(timing.to_dict()) >= {"median_ms", "p90_ms", "fps", "threads"}


def test_latency_default_threads_and_bad_arguments():
    timing = latency(Probe(), torch.randn(1, 8), warmup=0, iters=1)
    assert timing.threads == torch.get_num_threads() and timing.p90_ms == timing.median_ms
    with pytest.raises(DistilkitError, match="iters"):
        latency(Probe(), torch.randn(1, 8), iters=0)
    with pytest.raises(DistilkitError, match="threads"):
        latency(Probe(), torch.randn(1, 8), threads=0)
