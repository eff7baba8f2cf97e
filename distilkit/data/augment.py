"""Photometric and mirror augmentation of training pairs, as the official MixFormer(V2) pipeline applies it.

The official `lib/train/base_functions.py` runs a joint transform on the frames of a pair (ToGrayscale p 0.05,
RandomHorizontalFlip p 0.5: one roll for template, online template and search) and then, per crop,
ToTensorAndJitter (brightness 0.2) and RandomHorizontalFlip_Norm (p 0.5, rolled for each crop). A crop ends up
mirrored when exactly one of the two flips happened: at p = 0.5 that is each crop independently with
probability 0.5, the joint flip cancelling out. `Augment` does that directly: grayscale joint, brightness and
flip per crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from distilkit.checks import as_number
from distilkit.errors import DistilkitError
from distilkit.limits import MAX_BRIGHTNESS

#: ITU-R BT.601 luma weights, those of OpenCV's COLOR_RGB2GRAY (the official ToGrayscale).
_LUMA = np.array([0.299, 0.587, 0.114])
#: Uniform numbers one augmented sample draws: grayscale, the 3 crops' brightness factors, then their 3 flips.
DRAWS = 7


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """H×W×3 uint8 RGB → its BT.601 luma, rounded, in all three channels (as cv2.cvtColor RGB2GRAY + stack)."""
    gray = np.rint(image.astype(np.float64) @ _LUMA).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def mirror_box(box: np.ndarray) -> np.ndarray:
    """Normalised x1,y1,x2,y2 in a crop → the same box in the horizontally mirrored crop (x → 1 - x)."""
    return np.array([1.0 - box[2], box[1], 1.0 - box[0], box[3]], dtype=np.float64)


def brightness_range(jitter: float) -> tuple[float, float]:
    """Factors a brightness jitter of `jitter` draws from, uniformly (torchvision ColorJitter's range)."""
    return max(0.0, 1.0 - jitter), 1.0 + jitter


def _probability(value: object, what: str) -> float:
    p = as_number(value, what, minimum=0)
    if p > 1.0:
        raise DistilkitError(f"{what} is a probability in [0, 1], got {p:g}")
    return p


@dataclass(frozen=True)
class Augment:
    """grayscale: probability the whole pair (all three crops) turns gray; brightness: each crop's pixels ×
    U[max(0, 1 - b), 1 + b], clamped to the valid range; flip: probability each crop is mirrored, independently
    (the official two flips at 0.5 amount to flip = 0.5). All 0 (the default) leaves samples untouched."""

    grayscale: float = 0.0
    brightness: float = 0.0
    flip: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "grayscale", _probability(self.grayscale, "augment grayscale"))
        object.__setattr__(self, "flip", _probability(self.flip, "augment flip"))
        brightness = as_number(self.brightness, "augment brightness", minimum=0)
        if brightness > MAX_BRIGHTNESS:
            raise DistilkitError(f"augment brightness must be <= {MAX_BRIGHTNESS:g}, got {brightness:g}")
        object.__setattr__(self, "brightness", brightness)

    @property
    def active(self) -> bool:
        """Whether it changes anything (an inactive one draws no random numbers)."""
        return bool(self.grayscale or self.brightness or self.flip)

    def apply(self, crops: list[np.ndarray], box: np.ndarray, has_box: bool, draws: np.ndarray
              ) -> tuple[list[np.ndarray], list[float], np.ndarray]:
        """(template, online template, search) uint8 crops and the search box → the crops (gray, mirrored),
        each crop's brightness factor (for `normalize_image`) and the box (mirrored with the search crop when
        `has_box`). `draws`: `DRAWS` uniform numbers in [0, 1), so the sampler's generator decides."""
        if len(crops) != 3 or len(draws) != DRAWS:
            raise DistilkitError(f"Augment.apply takes 3 crops and {DRAWS} draws, got {len(crops)} and {len(draws)}")
        if draws[0] < self.grayscale:
            crops = [to_grayscale(c) for c in crops]
        low, high = brightness_range(self.brightness)
        factors = [low + (high - low) * float(u) for u in draws[1:4]] if self.brightness else [1.0, 1.0, 1.0]
        mirrored = [bool(u < self.flip) for u in draws[4:7]]
        crops = [np.ascontiguousarray(c[:, ::-1]) if m else c for c, m in zip(crops, mirrored)]
        if mirrored[2] and has_box:
            box = mirror_box(box)
        return crops, factors, box
