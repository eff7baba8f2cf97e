"""How a MixFormerV2 stage result is evaluated for a report: the per-frame speed of its tracker, tracking accuracy
(with and without online template updates), score-head accuracy; and the constant-box, CSRT and KCF baselines."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch

from distilkit.recipes.outdir import BASELINE_DIR, BASELINE_LABELS, EVAL_DIR, NO_UPDATE_EVAL_DIR
from distilkit.recipes.progress import RunLog
from distilkit.recipes.schema import Budget

#: Reference trackers every report shows, in order: the floor, and two classic correlation filters (OpenCV).
BASELINE_TRACKERS = ("constant", "csrt", "kcf")
_BASELINE_LABELS = dict(zip(BASELINE_TRACKERS, BASELINE_LABELS))
METRICS = ("auc", "precision", "norm_precision")
SCORE_PAIRS = 256


def tracker_for(model: Any, budget: Budget, eval_set: Any, device: str, online_update: bool | None = None) -> Any:
    """The tracker a report evaluates with: the budget's crops and tracker options, the default update interval."""
    from distilkit.trackers.mixformerv2.tracker import MixFormerV2Tracker
    from distilkit.trackers.single_object import default_update_interval

    options = dict(budget.eval.tracker)
    options.setdefault("update_interval", default_update_interval(model.config.name, getattr(eval_set, "name", "")))
    return MixFormerV2Tracker(model.to(device), template_factor=budget.template_factor,
                              search_factor=budget.tracking_search_factor, device=device,
                              online_update=online_update, **options)


def frame_latency(model: Any, budget: Budget) -> Any:
    """Median time of one `MixFormerV2Tracker.track` call on CPU (crop, templates cached, search forward, box),
    the per-frame cost of tracking, on a frame of the budget's synthetic image size."""
    from distilkit.profile import time_calls

    width, height = budget.synthetic.image_size
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    tracker = tracker_for(model.cpu(), budget, None, "cpu")
    box = np.array([0.4 * width, 0.4 * height, 0.2 * width, 0.2 * height])

    def step() -> None:
        tracker.state = box.copy()  # the same crop every time: timing must not depend on where the box drifts
        tracker.track(image)

    tracker.initialize(image, box)
    return time_calls(step, threads=budget.eval.latency_threads, warmup=5, iters=30)


def evaluate_tracking(model: Any, budget: Budget, eval_set: Any, out_dir: str, name: str, log: RunLog,
                      device: str) -> dict[str, Any]:
    """Per-frame CPU latency and tracking accuracy of a stage result; with a score head also the accuracy without
    online updates and the score head's accuracy."""
    from distilkit.eval import evaluate

    frame = frame_latency(model, budget)
    facts: dict[str, Any] = {"frame_ms": float(frame.median_ms), "frame_fps": float(frame.fps)}
    tracker = tracker_for(model, budget, eval_set, device)
    results = evaluate(tracker, eval_set, out_dir=os.path.join(out_dir, EVAL_DIR), name=name, progress=log.enabled)
    facts.update({k: float(results.overall[k]) for k in METRICS})
    if model.score_head is not None:
        facts["update_interval"] = int(tracker.update_interval)
        fixed = evaluate(tracker_for(model, budget, eval_set, device, online_update=False), eval_set,
                         out_dir=os.path.join(out_dir, NO_UPDATE_EVAL_DIR), name=name, progress=log.enabled)
        facts.update({f"{k}_no_update": float(fixed.overall[k]) for k in METRICS})
        facts["score_accuracy"] = score_accuracy(model, budget, eval_set)
    return facts


def score_accuracy(model: Any, budget: Budget, eval_set: Any, samples: int = SCORE_PAIRS) -> float:
    """Share of held-out pairs (half of them negatives) the score head classifies right at sigmoid 0.5."""
    from distilkit.data import PairSampler

    pairs = PairSampler(eval_set, template_size=budget.template_size, search_size=budget.search_size,
                        template_factor=budget.template_factor, search_factor=budget.search_factor,
                        center_jitter=budget.center_jitter, scale_jitter=budget.scale_jitter, max_gap=budget.max_gap,
                        samples_per_epoch=samples, negative_prob=0.5, seed=12345)
    right, device = 0, next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        for batch in torch.utils.data.DataLoader(pairs, batch_size=64):
            inputs = [batch[k].to(device) for k in ("template", "online_template", "search")]
            score = model(*inputs)["score"].cpu()
            right += int(((score > 0).float() == batch["label"]).sum())
    return right / samples


def _baseline_row(label: str, overall: dict[str, Any]) -> dict[str, Any]:
    """A report row of a reference tracker from its results' overall figures (as summary.json holds them)."""
    return {"name": label, **{k: float(overall[k]) for k in METRICS}, "fps": overall.get("fps")}


def _cached_baseline(path: str, label: str, log: RunLog) -> dict[str, Any] | None:
    """A baseline row from an earlier evaluation's summary.json, or None (absent or damaged: evaluate again)."""
    if not os.path.lexists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            overall = json.load(f)["overall"]
        return _baseline_row(label, overall)
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as err:
        log.info(f"{path} is unreadable ({type(err).__name__}: {err}): evaluating the baseline again")
        return None


def baselines(out: str, eval_set: Any, log: RunLog) -> list[dict[str, Any]]:
    """Constant box, CSRT and KCF on the evaluation set (each cached in `baseline/<name>/`): AUC, P, NP and the
    FPS they tracked at (one thread; OpenCV's own threading)."""
    from distilkit.eval import evaluate
    from distilkit.eval.baselines import make_baseline

    rows = []
    for kind in BASELINE_TRACKERS:
        label = _BASELINE_LABELS[kind]
        folder = os.path.join(out, BASELINE_DIR, label)
        row = _cached_baseline(os.path.join(folder, "summary.json"), label, log)
        if row is None:
            results = evaluate(lambda kind=kind: make_baseline(kind), eval_set, out_dir=folder, name=label, progress=False)
            row = _baseline_row(label, {**results.overall, "fps": results.fps})
        rows.append(row)
    return rows
