"""Distil your own corner-head tracker teacher into a token-head student with distilkit.distill.

The two toy models below stand in for your networks: a teacher that predicts dense top-left /
bottom-right corner heatmaps, and a student that predicts one distribution per box side from 4
prediction tokens (MixFormerV2's T4 head). Everything after "Distillation wiring" is the part you
write: corner heatmaps -> side distributions -> KL, box L1 + CIoU against ground truth, and feature
MSE through a learned projector (student width 32, teacher width 48). Runs in a few seconds on CPU:

    python examples/distill_custom_tracker.py --steps 30
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from distilkit.distill import (
    Distiller,
    FeatureProjector,
    box_loss,
    corner_to_sides,
    distribution_kd,
    feature_kd,
)
from distilkit.distill import sides_to_box

IMAGE, GRID = 32, 8  # search crop side in pixels; heatmap side = number of bins


class CornerTeacher(nn.Module):
    """Conv backbone on the search crop + two 1×1 corner heads: corner_logits (B, 2, GRID²)."""

    def __init__(self, width: int = 48) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Conv2d(3, width, 4, stride=4), nn.Conv2d(width, width, 3, padding=1)])
        self.corners = nn.Conv2d(width, 2, 1)

    def forward(self, search: torch.Tensor) -> dict[str, object]:
        features, x = [], search
        for block in self.blocks:
            x = torch.relu(block(x))
            features.append(x.flatten(2).transpose(1, 2))  # (B, GRID², width) tokens
        return {"corner_logits": self.corners(x).flatten(2), "features": features}


class TokenStudent(nn.Module):
    """Patch tokens + 4 prediction tokens (order l, t, r, b) through transformer blocks, shared MLP head."""

    def __init__(self, width: int = 32, depth: int = 2) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, width, IMAGE // GRID, stride=IMAGE // GRID)
        self.pos = nn.Parameter(torch.zeros(1, GRID * GRID, width))
        self.pred_tokens = nn.Parameter(torch.randn(1, 4, width) * 0.02)
        self.blocks = nn.ModuleList(
            [
                nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True)
                for _ in range(depth)
            ]
        )
        self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, GRID))

    def forward(self, search: torch.Tensor) -> dict[str, object]:
        tokens = self.embed(search).flatten(2).transpose(1, 2) + self.pos
        x = torch.cat([tokens, self.pred_tokens.expand(len(search), -1, -1)], dim=1)
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x[:, :-4])  # search tokens only, aligned with the teacher's
        side_logits = self.head(x[:, -4:])  # (B, 4, GRID)
        return {
            "side_logits": side_logits,
            "boxes": sides_to_box(side_logits, from_logits=True),
            "features": features,
        }


def synthetic_batch(batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Noise images with one bright rectangle; gt boxes are normalised x1 y1 x2 y2."""
    xy = torch.rand(batch_size, 2, generator=generator) * 0.5
    boxes = torch.cat([xy, xy + 0.2 + torch.rand(batch_size, 2, generator=generator) * 0.3], dim=1).clamp(
        0, 1
    )
    images = torch.rand(batch_size, 3, IMAGE, IMAGE, generator=generator) * 0.2
    for image, (x1, y1, x2, y2) in zip(images, (boxes * IMAGE).round().long().tolist()):
        image[:, y1:y2, x1:x2] += 0.8
    return {"search": images, "gt_boxes": boxes}


def pretrain_teacher(teacher: CornerTeacher, steps: int, generator: torch.Generator) -> None:
    """Stand-in for your trained teacher: a few steps of soft-argmax corner regression (L1 + GIoU)."""
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=3e-3)
    for _ in range(steps):
        batch = synthetic_batch(16, generator)
        top_left, bottom_right = teacher(batch["search"])["corner_logits"].unbind(dim=1)
        pred = sides_to_box(corner_to_sides(top_left, bottom_right, from_logits=True))
        terms = box_loss(pred, batch["gt_boxes"])
        optimizer.zero_grad()
        (5 * terms["l1"] + 2 * terms["giou"]).backward()
        optimizer.step()


# ---- Distillation wiring: the user's part -------------------------------------------------------
def build_distiller(student: nn.Module, teacher: nn.Module) -> Distiller:
    """Dense-to-sparse KD (weight 5) + L1 (5) + CIoU (2) + feature MSE (0.2), MixFormerV2's weights."""
    pairs = [(0, 0), (1, 1)]  # (student_layer, teacher_layer); LayerMap.remap(pairs) after depth pruning
    projector = FeatureProjector(pairs, student_dims=32, teacher_dims=48)

    def side_kd(student_out, teacher_out, batch):
        top_left, bottom_right = teacher_out["corner_logits"].unbind(dim=1)
        teacher_sides = corner_to_sides(top_left, bottom_right, from_logits=True)  # (B, 4, GRID)
        return distribution_kd(student_out["side_logits"], teacher_sides)

    def student_forward(model, batch):  # box terms once per step, shared by three parts
        out = model(batch["search"])
        return {**out, "box": box_loss(out["boxes"], batch["gt_boxes"])}

    losses = {
        "kd": side_kd,
        "l1": lambda s, t, batch: s["box"]["l1"],
        "ciou": lambda s, t, batch: s["box"]["ciou"],
        "feat": lambda s, t, batch: feature_kd(s["features"], t["features"], pairs, projector),
        "iou": lambda s, t, batch: s["box"]["iou"],  # weight 0: logged, not optimised
    }
    weights = {"kd": 5.0, "l1": 5.0, "ciou": 2.0, "feat": 0.2, "iou": 0.0}
    return Distiller(
        student,
        teacher,
        losses,
        weights,
        forward_fn=student_forward,
        teacher_forward_fn=lambda model, batch: model(batch["search"]),
        modules={"projector": projector},
    )


def train(steps: int = 30, batch_size: int = 16, seed: int = 0) -> list[dict[str, float]]:
    """A short training run; returns the logged parts of every step."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    teacher = CornerTeacher()  # in real use: load your trained teacher checkpoint instead
    pretrain_teacher(teacher, steps, generator)
    distiller = build_distiller(TokenStudent(), teacher)
    optimizer = torch.optim.AdamW(distiller.parameters(), lr=2e-3, weight_decay=1e-4)  # student + projector
    distiller.train()
    history = []
    for step in range(steps):
        total, parts = distiller(synthetic_batch(batch_size, generator), step=step)
        optimizer.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(distiller.parameters(), 1.0)
        optimizer.step()
        history.append({"total": total.item(), **{name: value.item() for name, value in parts.items()}})
        if step % 10 == 0 or step == steps - 1:
            print(f"step {step:3d}  " + "  ".join(f"{k} {v:.4f}" for k, v in history[-1].items()))
    return history


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    train(parser.parse_args().steps)
