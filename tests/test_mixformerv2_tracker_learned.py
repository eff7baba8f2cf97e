"""A tiny MixFormerV2 trained in-test follows a textured target moving in a straight line.

Unlike tests/test_mixformerv2_tracker.py (model outputs replaced by a pixel detector), here the boxes
come from the network itself: a 2-block MixFormerV2 with a corner head is trained from scratch for a
few hundred steps on PairSampler crops of training videos (the same astronaut-face target on grey
`camera` backgrounds, random straight paths), then MixFormerV2Tracker runs it on a held-out video
whose path and background region were never seen. The same network before training must lose the
target, so the test fails if training, cropping or mapping back stops working.

The corner head (MixViT's, the teacher head) is used because it learns localisation within ~150
steps on any seed; a T4 head trained from scratch sits on a constant-box plateau for a seed-dependent
250 to 600+ steps (the official students get their T4 head by distillation, not from scratch).
"""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from distilkit.data import PairSampler, Sequence
from distilkit.distill import box_loss
from distilkit.trackers.mixformerv2 import MixFormerV2, MixFormerV2Tracker, build_model

pytestmark = pytest.mark.isa_sensitive  # float results: rerun under .ci/avx2.env

SEED = 0
H = W = 160
SIDE = 24  # target box side in pixels; the search window is search_factor (4) times larger
STEPS, BATCH, LR = 300, 16, 2e-3


def target_patch() -> np.ndarray:
    """The astronaut's face (colourful, textured) shrunk to SIDE × SIDE."""
    face = skimage.data.astronaut()[30:190, 150:310]
    return np.asarray(Image.fromarray(face).resize((SIDE, SIDE), Image.BILINEAR))


def background(top: int, left: int) -> np.ndarray:
    """Low-contrast grey H × W crop of skimage's `camera` photo."""
    grey = skimage.data.camera()[top : top + H, left : left + W].astype(np.float32)
    grey = np.clip(110 + 0.4 * (grey - grey.mean()), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def straight_line(name: str, bg: np.ndarray, start: tuple[float, float], end: tuple[float, float], n: int) -> Sequence:
    """The target pasted at n evenly spaced integer positions from `start` to `end` (top-left x, y)."""
    patch = target_patch()
    frames, boxes = [], []
    for x, y in np.round(np.linspace(start, end, n)).astype(int):
        frame = bg.copy()
        frame[y : y + SIDE, x : x + SIDE] = patch
        frames.append(frame)
        boxes.append([x, y, SIDE, SIDE])
    return Sequence(name, frames, np.array(boxes), np.ones(n, dtype=bool))


def training_videos(rng: np.random.Generator, count: int = 12, length: int = 12) -> list[Sequence]:
    """Random straight paths over backgrounds from the top half of `camera` (the test uses the bottom)."""
    videos = []
    for i in range(count):
        top, left = rng.integers(0, 256 - H // 2), rng.integers(0, 512 - W)
        start, end = rng.uniform(0, H - SIDE, 2), rng.uniform(0, H - SIDE, 2)
        videos.append(straight_line(f"train{i}", background(top, left), tuple(start), tuple(end), length))
    return videos


def held_out_video() -> Sequence:
    """Held-out: bottom-left to top-right diagonal (~5 px/frame), background from the bottom of `camera`."""
    return straight_line("test", background(340, 300), (16, 120), (120, 20), 30)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def follow(model: MixFormerV2, video: Sequence) -> tuple[float, float]:
    """Track the whole video; return the mean IoU and the last frame's centre error in pixels."""
    tracker = MixFormerV2Tracker(model)
    tracker.initialize(video.frame(0), video.boxes[0])
    ious = []
    for i in range(1, len(video)):
        box, _ = tracker.track(video.frame(i))
        ious.append(iou(box, video.boxes[i]))
    truth = video.boxes[-1]
    error = np.linalg.norm(box[:2] + box[2:] / 2 - (truth[:2] + truth[2:] / 2))
    return float(np.mean(ious)), float(error)


def train(model: MixFormerV2, videos: list[Sequence], seed: int) -> None:
    """L1 + GIoU on PairSampler crops (centre/scale jitter), AdamW with a one-cycle schedule."""
    cfg = model.config
    sampler = PairSampler(videos, cfg.template_size, cfg.search_size, search_factor=cfg.search_factor,
                          center_jitter=3.0, scale_jitter=0.25, samples_per_epoch=BATCH, seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, LR, total_steps=STEPS, pct_start=0.1)
    model.train()
    for step in range(STEPS):
        sampler.set_epoch(step)
        items = [sampler[i] for i in range(BATCH)]
        batch = {k: torch.stack([item[k] for item in items])
                 for k in ("template", "online_template", "search", "search_box")}
        boxes = model(batch["template"], batch["online_template"], batch["search"])["boxes"]
        losses = box_loss(boxes, batch["search_box"])
        loss = 5 * losses["l1"] + 2 * losses["giou"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    model.eval()


def test_trained_tiny_model_follows_a_target_moving_in_a_straight_line() -> None:
    torch.manual_seed(SEED)
    model = build_model("mixformerv2-s-tiny", depth=2, head="corner", score_head=False)
    video = held_out_video()
    untrained_iou, untrained_error = follow(model, video)
    # The path (~145 px) is much longer than the half-window (48 px): a tracker that does not
    # locate the target is left behind.
    assert untrained_iou < 0.2 and untrained_error > 40, (untrained_iou, untrained_error)

    train(model, training_videos(np.random.default_rng(SEED)), SEED)
    trained_iou, trained_error = follow(model, video)
    assert trained_iou > 0.6 and trained_error < SIDE / 4, (trained_iou, trained_error)
