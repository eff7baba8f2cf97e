"""What every single-object tracker of distilkit shares, torch-free (the onnxruntime tracker imports it too):
the first-box check, the official online-template update rule and its per-benchmark intervals."""

from __future__ import annotations

import math
from typing import Callable, Generic, TypeVar

import numpy as np

from distilkit.checks import as_int, as_number
from distilkit.data.crop import CropWindow, check_rgb_image, clip_box
from distilkit.errors import DistilkitError

#: Official online-template update intervals per benchmark (TEST.UPDATE_INTERVALS of the released score configs,
#: experiments/mixformer2_vit_online/224_depth4_mlp1_score.yaml and 288_depth8_score.yaml).
UPDATE_INTERVALS = {
    "mixformerv2-s": {"lasot": 200, "got10k": 15, "trackingnet": 25},
    "mixformerv2-b": {"lasot": 200, "got10k": 10, "trackingnet": 25},
}
#: Update intervals on data without an official one: the built-in synthetic videos (60-100 frames) update twice or more.
DEFAULT_UPDATE_INTERVALS = {"synthetic": 25}
FALLBACK_UPDATE_INTERVAL = 200


def official_update_interval(model_name: str, dataset: str) -> int | None:
    """The official update interval of a model family (its `-tiny` variant included; any other model gets
    MixFormerV2-S's) on benchmark `dataset` (lasot, got10k, trackingnet), or None for other data."""
    return UPDATE_INTERVALS.get(model_name.removesuffix("-tiny"), UPDATE_INTERVALS["mixformerv2-s"]).get(dataset)


def default_update_interval(model_name: str, dataset: str) -> int:
    """The interval `distilkit eval` and `distilkit prune` reports track with: the official one on its benchmark,
    DEFAULT_UPDATE_INTERVALS on the synthetic data, else FALLBACK_UPDATE_INTERVAL."""
    return (official_update_interval(model_name, dataset) or DEFAULT_UPDATE_INTERVALS.get(dataset)
            or FALLBACK_UPDATE_INTERVAL)


def check_initial_box(image: np.ndarray, box_xywh: object) -> np.ndarray:
    """The first frame's box as float64 (x, y, w, h) after checking it and the image; one clear error otherwise."""
    try:
        box = np.asarray(box_xywh, dtype=np.float64)
    except (TypeError, ValueError):
        box = np.empty(0)
    if box.shape != (4,):
        raise DistilkitError(f"initial box must be 4 numbers (x, y, w, h), got {box_xywh!r}"[:200])
    if not (np.isfinite(box).all() and box[2] > 0 and box[3] > 0):
        raise DistilkitError(f"initial box must be finite with positive width and height, got {box.tolist()}")
    check_rgb_image(image)
    h, w = image.shape[:2]
    if box[0] >= w or box[1] >= h or box[0] + box[2] <= 0 or box[1] + box[3] <= 0:
        raise DistilkitError(f"initial box {box.tolist()} (x, y, w, h) lies outside the {w}×{h} image")
    return box


def online_update_enabled(requested: bool | None, has_score_head: bool) -> bool:
    """Whether a tracker updates its online templates: as `requested`, by default when the model has a score head
    (the rule needs a score to pick the frame, so requesting it without one is an error)."""
    if requested and not has_score_head:
        raise DistilkitError("online_update=True needs a model with a score head (it picks the frame to update with)")
    return has_score_head if requested is None else bool(requested)


def box_in_image(xyxy: np.ndarray, window: CropWindow, image_hw: tuple[int, int]) -> np.ndarray:
    """A predicted box (normalised x1 y1 x2 y2 in the search crop `window`) as x, y, w, h image pixels, clipped as
    the official tracker clips it (at least 10 px of it stays inside the image)."""
    return clip_box(window.box_from_crop(xyxy), image_hw, margin=10.0)


T = TypeVar("T")


class OnlineUpdateRule(Generic[T]):
    """The official online-template rule: a frame whose score beats `threshold` and every frame since the last
    update gives the candidate template; every `interval` frames the candidate replaces the oldest of `slots`
    online templates (the first frame's template when no frame qualified). Holds templates of any type."""

    def __init__(self, interval: int, threshold: float, slots: int) -> None:
        self.interval = as_int(interval, "update_interval", minimum=1)
        self.threshold = as_number(threshold, "score_threshold")
        self.slots = as_int(slots, "online template slots", minimum=1)
        self.best_score = -math.inf

    def reset(self, template: T) -> None:
        """Start a sequence whose first-frame template is `template`."""
        self.template = self.candidate = template
        self.best_score = -math.inf
        self.forget = 0

    def step(self, frame_id: int, score: float, crop: Callable[[], T]) -> tuple[int, T] | None:
        """Frame `frame_id` (1-based) scored `score`; `crop()` makes its template if it becomes the candidate.
        Returns (slot, template) when this frame updates the online templates, else None."""
        if score > self.threshold and score > self.best_score:
            self.candidate, self.best_score = crop(), score
        if frame_id % self.interval:
            return None
        slot, template = self.forget, self.candidate
        self.forget = (self.forget + 1) % self.slots
        self.best_score, self.candidate = -math.inf, self.template
        return slot, template


class FollowsOnlineRule:
    """The online-update settings of a tracker holding an `OnlineUpdateRule` in `self.rule`, as attributes
    (`tracker.update_interval = 10` takes effect at the next frame, checked like the constructor's argument)."""

    rule: OnlineUpdateRule

    @property
    def update_interval(self) -> int:
        return self.rule.interval

    @update_interval.setter
    def update_interval(self, value: int) -> None:
        self.rule.interval = as_int(value, "update_interval", minimum=1)

    @property
    def score_threshold(self) -> float:
        return self.rule.threshold

    @score_threshold.setter
    def score_threshold(self, value: float) -> None:
        self.rule.threshold = as_number(value, "score_threshold")

    @property
    def best_score(self) -> float:
        """The best score since the last online-template update (-inf: no candidate frame yet)."""
        return self.rule.best_score


__all__ = [
    "DEFAULT_UPDATE_INTERVALS", "FALLBACK_UPDATE_INTERVAL", "FollowsOnlineRule", "OnlineUpdateRule", "UPDATE_INTERVALS",
    "box_in_image", "online_update_enabled",
    "check_initial_box", "default_update_interval", "official_update_interval",
]
