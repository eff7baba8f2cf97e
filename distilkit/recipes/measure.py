"""What a report says about each stage result: size, exact MACs and the CPU latency of one full forward (for any
family), then the family's own evaluation (accuracy, and any speed it measures itself)."""

from __future__ import annotations

import time
from typing import Any

import torch

from distilkit.recipes.family import ModelFamily
from distilkit.recipes.progress import RunLog
from distilkit.recipes.schema import Budget


def cost(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict[str, Any]:
    """Params and exact MACs of one full forward on `inputs` (batch 1)."""
    from distilkit.profile import profile

    p = profile(model.cpu().eval(), inputs)
    return {"params": int(p.params), "macs": int(p.macs)}


def measure(family: ModelFamily, model: Any, budget: Budget, eval_set: Any, out_dir: str, name: str, log: RunLog,
            device: str) -> dict[str, Any]:
    """Architecture, params, MACs, CPU latency of a full forward and the family's evaluation of a stage result."""
    from distilkit.profile import latency

    inputs = family.example_inputs(budget)
    facts = {**family.describe(model), **cost(model, inputs)}
    timing = latency(model.cpu(), inputs, threads=budget.eval.latency_threads)
    facts.update(latency_ms=float(timing.median_ms), fps=float(timing.fps), latency_threads=int(timing.threads))
    t0 = time.perf_counter()
    facts.update(family.evaluate(model, budget, eval_set, out_dir, name, log, device))
    model.cpu()
    facts["eval_seconds"] = time.perf_counter() - t0
    return facts
