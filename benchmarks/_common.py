"""Shared pieces of the ablation benchmarks: the synthetic-tracking setup, training through the recipe
trainer, tracking AUC, seed statistics, and atomic Markdown/PNG/JSON output.

Students and teachers are trained with `distilkit.recipes.trainer.Trainer` and `StageLoss` (the loop
`distilkit prune` uses), so a benchmark row differs from another only in initialisation and losses.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from distilkit.atomic import write_atomic  # noqa: F401 - the benchmark scripts import it from here
from distilkit.errors import DistilkitError
from distilkit.heap import retain_freed_memory

RESULTS_DIR = Path(__file__).with_name("results")


# -- output ----------------------------------------------------------------------------------------
# -- command line ----------------------------------------------------------------------------------
def count(minimum: int) -> Callable[[str], int]:
    """argparse type: an int >= `minimum` (argparse then reports a bad value as a usage error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def distinct(values: Sequence[int], flag: str, parser: argparse.ArgumentParser) -> None:
    """Refuse repeated values (a seed run twice would count twice in mean ± std)."""
    if len(set(values)) != len(values):
        parser.error(f"{flag} values must be distinct, got {list(values)}")


def run_main(main: Callable[[], Any]) -> None:
    """Run a benchmark's main() with freed memory kept in the process, as the CLI runs (distilkit.heap);
    a DistilkitError (bad model name, ...) is one line and exit status 2."""
    retain_freed_memory()
    try:
        main()
    except DistilkitError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def write_json(path: Path, obj: Any) -> Path:
    return write_atomic(path, json.dumps(obj, indent=2) + "\n")


def save_figure(fig: Any, path: Path) -> Path:
    """Save a matplotlib figure as PNG atomically (rendered to memory first)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    return write_atomic(path, buf.getvalue())


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: Optional[str] = None) -> str:
    """A GitHub Markdown table; `align` is one letter per column, l or r (default: first l, rest r)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    vals = [float(v) for v in values]
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def fmt_mean_std(values: Sequence[float], scale: float = 100.0, digits: int = 1) -> str:
    """'62.9 ± 0.4' (values ×`scale`), the form every table here uses."""
    m, s = mean_std(values)
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "load_avg": list(os.getloadavg())}


def machine_line(info: dict[str, Any]) -> str:
    load = ", ".join(f"{v:.1f}" for v in info["load_avg"])
    return (f"{info['cpu']}, {info['cores']} cores, torch {info['torch']} ({info['torch_threads']} threads), "
            f"Python {info['python']}; load average at the end {load}")


# -- synthetic tracking ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TrackingScale:
    """Data volume and training length of one tracking ablation run (shared by every row)."""

    train_sequences: int = 60
    test_sequences: int = 12
    length: int = 60
    samples_per_epoch: int = 2048
    batch_size: int = 32
    teacher_epochs: int = 8
    student_epochs: int = 3
    scale_jitter: float = 0.25  # the published tables' setting (the demo budget has used 0.5 since)


QUICK_TRACKING = TrackingScale(train_sequences=3, test_sequences=2, length=12, samples_per_epoch=16, batch_size=8,
                               teacher_epochs=1, student_epochs=1)


class CachedPairs(torch.utils.data.Dataset):
    """A PairSampler whose items are kept once made, keyed by (epoch, index)."""

    def __init__(self, base: Any):
        self.base = base
        self.epoch = 0
        self._items: dict[tuple[int, int], Any] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Any:
        key = (self.epoch, int(index))
        if key not in self._items:
            self._items[key] = self.base[index]
        return self._items[key]


class TrackingBench:
    """The demo budget of the shipped mixformerv2-s recipe (tiny models, 32/64 px crops) at a given scale."""

    def __init__(self, scale: TrackingScale, recipe: str = "mixformerv2-s", budget: str = "demo"):
        from distilkit.data import SyntheticTracking
        from distilkit.recipes import load_recipe

        base = load_recipe(recipe).budget(budget)
        self.scale = scale
        self.budget = base.replace(batch_size=scale.batch_size, samples_per_epoch=scale.samples_per_epoch,
                                   scale_jitter=scale.scale_jitter, workers=0, checkpoint_every=0)
        size = tuple(base.synthetic.image_size)
        self.train_set = SyntheticTracking(num_sequences=scale.train_sequences, length=scale.length, seed=0,
                                           image_size=size, split="train")
        self.test_set = SyntheticTracking(num_sequences=scale.test_sequences, length=scale.length, seed=0,
                                          image_size=size, split="test")
        self._pairs: dict[int, CachedPairs] = {}

    def pairs(self, seed: int, cached: bool = True) -> Any:
        """Training pairs (template, online template, search crop with jitter), positives only.

        Samples are a pure function of (seed, epoch, index); with `cached`, every student trained with
        this seed reuses the crops made for the first one (same data, rendered once)."""
        from distilkit.data import PairSampler

        if cached and seed in self._pairs:
            return self._pairs[seed]
        b = self.budget
        sampler = PairSampler([self.train_set], template_size=b.template_size, search_size=b.search_size,
                           template_factor=b.template_factor, search_factor=b.search_factor,
                           center_jitter=b.center_jitter, scale_jitter=b.scale_jitter, max_gap=b.max_gap,
                           samples_per_epoch=b.samples_per_epoch, negative_prob=0.0, seed=seed)
        if not cached:
            return sampler
        self._pairs[seed] = CachedPairs(sampler)
        return self._pairs[seed]

    def build(self, model: str, seed: int, **overrides: Any) -> nn.Module:
        """A fresh `<model>-tiny` (budget suffix) with the budget's crop sizes, no score head, weights from `seed`
        (torch's default seed differs from process to process)."""
        from distilkit.trackers.mixformerv2.family.models import crop_overrides
        from distilkit.recipes.state import seed_everything
        from distilkit.trackers.mixformerv2 import build_model

        seed_everything(seed)
        kw = {**self.budget.model_overrides, **crop_overrides(self.budget), "score_head": False, **overrides}
        return build_model(model + self.budget.model_suffix, **kw)

    def train(self, name: str, student: nn.Module, losses: dict[str, float], seed: int, epochs: int,
              teacher: Optional[nn.Module] = None, pruner: Any = None,
              feature_pairs: Sequence[tuple[int, int]] = (), cached: bool = True) -> float:
        """Train `student` in place with the recipe Trainer; returns the training seconds."""
        from distilkit.recipes.distributed import Dist
        from distilkit.recipes.progress import RunLog
        from distilkit.recipes.state import seed_everything
        from distilkit.recipes.trainer import Trainer, TrainSettings
        from distilkit.trackers.mixformerv2.family import MixFormerV2Family
        from distilkit.trackers.mixformerv2.family.losses import stage_loss

        seed_everything(seed)
        restore_trainable(student)
        b, o = self.budget, self.budget.optimizer
        settings = TrainSettings(epochs=epochs, batch_size=b.batch_size, lr=o.lr, backbone_lr_scale=o.backbone_lr_scale,
                                 weight_decay=o.weight_decay, grad_clip=o.grad_clip, warmup_steps=o.warmup_steps,
                                 lr_drop_at=o.lr_drop_at, lr_drop_factor=o.lr_drop_factor, workers=0,
                                 checkpoint_every=0, seed=seed)
        loss = stage_loss(losses, list(feature_pairs))
        with tempfile.TemporaryDirectory(prefix="distilkit-bench-") as work:
            trainer = Trainer(name, student, teacher, loss, self.pairs(seed, cached), settings, work, Dist(),
                              RunLog(None, enabled=False), pruner=pruner, forward=MixFormerV2Family().forward)
            start = time.perf_counter()
            trainer.fit()
            return time.perf_counter() - start

    def evaluate(self, model: nn.Module, name: str) -> dict[str, float]:
        """One-pass tracking on the held-out synthetic test split: AUC, precision, normalised precision."""
        from distilkit.eval import evaluate
        from distilkit.trackers.mixformerv2 import MixFormerV2Tracker

        b = self.budget
        tracker = MixFormerV2Tracker(model.eval(), template_factor=b.template_factor, search_factor=b.search_factor,
                                     **b.eval.tracker)
        with torch.inference_mode():
            overall = evaluate(tracker, self.test_set, name=name, progress=False).overall
        return {k: float(overall[k]) for k in ("auc", "precision", "norm_precision")}

    def constant_box_auc(self) -> float:
        """AUC of a tracker that never moves (the floor every trained row must clear)."""
        from distilkit.eval import ConstantBoxTracker, evaluate

        return float(evaluate(ConstantBoxTracker(), self.test_set, name="constant-box", progress=False).overall["auc"])


CORNER_LOSSES = {"l1": 5.0, "giou": 2.0}  # the demo recipe's teacher stage


def _cached_model(cache: Optional[Path], key: str, make: Any) -> tuple[nn.Module, dict[str, Any]]:
    """`make()` -> (model, facts), or the model and facts saved under cache/key by an earlier run."""
    import distilkit.io as dio

    where = cache / key if cache is not None else None
    if where is not None and (where / "facts.json").is_file():
        return dio.load(str(where / "model")), json.loads((where / "facts.json").read_text())
    model, facts = make()
    if where is not None:
        dio.save(model, str(where / "model"))
        write_json(where / "facts.json", facts)
    return model, facts


def _scale_key(bench: "TrackingBench", threads: int) -> str:
    s = bench.scale
    return (f"tr{s.train_sequences}-te{s.test_sequences}-len{s.length}-spe{s.samples_per_epoch}-b{s.batch_size}"
            f"-t{s.teacher_epochs}-s{s.student_epochs}-threads{threads}"
            + (f"-sj{s.scale_jitter:g}" if s.scale_jitter != 0.25 else ""))


def corner_teacher(bench: "TrackingBench", cache: Optional[Path] = None) -> tuple[nn.Module, dict[str, Any]]:
    """The route's first stage: 12-layer tiny MixViT with a plain corner head, trained on ground truth (seed 0)."""

    def make() -> tuple[nn.Module, dict[str, Any]]:
        model = bench.build("mixvit-b-corner", seed=0)
        seconds = bench.train("teacher", model, CORNER_LOSSES, seed=0, epochs=bench.scale.teacher_epochs, cached=False)
        return model.eval(), {**bench.evaluate(model, "corner-teacher"), "seconds": seconds, "losses": CORNER_LOSSES}

    return _cached_model(cache, f"{_scale_key(bench, torch.get_num_threads())}/corner", make)


def restore_trainable(model: nn.Module) -> None:
    """Make every parameter trainable that a freshly built model of the same architecture trains.

    A model that served as a frozen teacher (or a copy of one) has requires_grad off everywhere; the
    fixed sin-cos position tables must stay off (they are parameters with requires_grad=False)."""
    from distilkit.trackers.mixformerv2 import build_model_from_config

    fresh = dict(build_model_from_config(model.live_config()).named_parameters())
    for name, p in model.named_parameters():
        p.requires_grad_(fresh[name].requires_grad)


def set_threads(threads: Optional[int]) -> None:
    if threads:
        torch.set_num_threads(threads)
