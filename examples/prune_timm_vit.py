"""Distil a 12-layer timm ViT classifier into 6 layers three ways and compare test accuracy.

Students, all trained the same way afterwards (logit KD from the teacher, KL with temperature):
  first-k  the teacher's first 6 blocks (paper: "Tea-fir"),
  skip-k   6 evenly skipped blocks (paper: "Tea-skip", i.e. PMDP with m = 0),
  PMDP     all 12 blocks, the 6 skipped ones faded out by γ(t) = ½(1 + cos(π t/m)), then removed.
The task is distilkit's built-in classification data (`distilkit.classification.GeneratedShapes`, the
`vit-classifier` recipe's demo data): 32×32 images of six shapes (disk, square, triangle, ring, cross, bar)
filled with a texture cut from one scikit-image photo over a background cut from another.

    python examples/prune_timm_vit.py --threads 1   # ~3 min on a shared 2-core CPU
    python examples/prune_timm_vit.py --quick       # a smoke run in seconds

One run (seed 0, shared CPU, 178 s) gave test accuracy teacher 0.662, first-k 0.645, skip-k 0.658,
PMDP 0.658: one seed and 600 test images, so differences of ~2 points are within noise.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import nn

from distilkit import io
from distilkit.classification import SHAPES, GeneratedShapes, build_vit
from distilkit.depth import CosineSchedule, ProgressiveDepthPruner, select_layers, shallow_copy
from distilkit.distill import logit_kd



@dataclass(frozen=True)
class Config:
    train_size: int = 2400
    test_size: int = 600
    img: int = 32
    patch: int = 8
    dim: int = 64
    heads: int = 4
    depth: int = 12
    keep: int = 6
    teacher_epochs: int = 12
    student_epochs: int = 6
    eliminate_epochs: float = 3.0  # PMDP m, in epochs
    batch: int = 32
    lr: float = 2e-3
    temperature: float = 2.0


QUICK = Config(train_size=128, test_size=64, dim=32, teacher_epochs=1, student_epochs=1, eliminate_epochs=0.5)


# -- data ----------------------------------------------------------------------------------------
def make_images(n: int, size: int, split: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` generated images (N, 3, size, size), normalised, and their shape labels (distilkit's built-in
    classification data, the `vit-classifier` recipe's demo data)."""
    data = GeneratedShapes(n, size, split=split, seed=seed)
    images, labels = zip(*(data[i] for i in range(n)))
    return torch.stack(images), torch.tensor(labels)


def batches(x: torch.Tensor, y: torch.Tensor, size: int, gen: torch.Generator):
    order = torch.randperm(len(x), generator=gen)
    for start in range(0, len(x), size):
        idx = order[start : start + size]
        yield x[idx], y[idx]


# -- training ------------------------------------------------------------------------------------
def vit(cfg: Config) -> nn.Module:
    return build_vit("vit-ti-shapes", img_size=cfg.img, patch_size=cfg.patch, embed_dim=cfg.dim, depth=cfg.depth,
                     num_heads=cfg.heads)


def fit(model, data, cfg: Config, epochs: int, seed: int, teacher=None, pruner=None) -> nn.Module:
    """AdamW with cosine LR; cross-entropy for the teacher, logit KD for students; PMDP steps per iteration."""
    x, y = data
    steps = epochs * math.ceil(len(x) / cfg.batch)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.05)
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0)))
    )
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for xb, yb in batches(x, y, cfg.batch, gen):
            logits = model(xb)
            if teacher is None:
                loss = F.cross_entropy(logits, yb)
            else:
                with torch.no_grad():
                    target = teacher(xb)
                loss = logit_kd(logits, target, temperature=cfg.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if pruner is not None:
                pruner.step()  # one iteration; γ reaches 0 after `eliminate_epochs`
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, data) -> float:
    x, y = data
    model.eval()
    hits = sum(int((model(x[i : i + 256]).argmax(-1) == y[i : i + 256]).sum()) for i in range(0, len(x), 256))
    return hits / len(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (seconds)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--out", type=Path, default=None, help="save the PMDP student here (distilkit.io)")
    args = ap.parse_args()
    cfg = QUICK if args.quick else Config()
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console()
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    train = make_images(cfg.train_size, cfg.img, "train", args.seed)
    test = make_images(cfg.test_size, cfg.img, "test", args.seed)

    teacher = fit(vit(cfg), train, cfg, cfg.teacher_epochs, args.seed)
    for p in teacher.parameters():
        p.requires_grad_(False)
    console.print(f"teacher trained ({time.perf_counter() - started:.0f} s)")

    remove = select_layers(cfg.depth, cfg.keep, "skip")
    students = {
        "first-k": shallow_copy(teacher, cfg.keep, method="first"),
        "skip-k": shallow_copy(teacher, cfg.keep, method="skip"),
    }
    for student in students.values():
        student.requires_grad_(True)
    for name, student in students.items():
        fit(student, train, cfg, cfg.student_epochs, args.seed + 1, teacher=teacher)
        console.print(f"{name} distilled ({time.perf_counter() - started:.0f} s)")

    pmdp = copy.deepcopy(teacher).requires_grad_(True)
    iters = math.ceil(cfg.train_size / cfg.batch)
    pruner = ProgressiveDepthPruner(
        pmdp, remove, schedule=CosineSchedule(m=cfg.eliminate_epochs), unit="iteration", iters_per_epoch=iters
    )
    fit(pmdp, train, cfg, cfg.student_epochs, args.seed + 1, teacher=teacher, pruner=pruner)
    gamma_at_end = pruner.gamma
    layer_map = pruner.finalize()
    students["PMDP"] = pmdp
    console.print(f"PMDP distilled, γ={gamma_at_end:.3g}, removed {list(layer_map.removed)} "
                  f"({time.perf_counter() - started:.0f} s)")

    table = Table(title=f"{cfg.depth}→{cfg.keep} layers, {len(SHAPES)}-way shapes, {cfg.test_size} test images")
    for column in ("model", "blocks", "params", "test acc"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, model in {"teacher": teacher, **students}.items():
        params = sum(p.numel() for p in model.parameters())
        table.add_row(name, str(len(model.blocks)), f"{params:,}", f"{accuracy(model, test):.3f}")
    console.print(table)
    if args.out is not None:
        console.print(f"PMDP student saved to {io.save(pmdp, args.out)}")
    console.print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
