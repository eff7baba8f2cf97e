"""Square context crops around a box, and the maps between image and crop coordinates.

Convention (MixFormerV2/STARK): side = ceil(sqrt(w·h)·factor), centred on the box centre,
zero-padded where it leaves the image, resized to `output_size`. Boxes inside the crop are
normalised xyxy in [0, 1] relative to the crop.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
from PIL import Image

from distilkit.errors import DistilkitError


@dataclass(frozen=True)
class CropWindow:
    """Where a crop came from: top-left corner and side of the square window, in image pixels."""

    x0: float
    y0: float
    side: float
    output_size: int

    def box_to_crop(self, box_xywh: np.ndarray) -> np.ndarray:
        """Image x,y,w,h box(es) → normalised x1,y1,x2,y2 in this crop (not clipped)."""
        b = np.asarray(box_xywh, dtype=np.float64)
        x1 = (b[..., 0] - self.x0) / self.side
        y1 = (b[..., 1] - self.y0) / self.side
        x2 = (b[..., 0] + b[..., 2] - self.x0) / self.side
        y2 = (b[..., 1] + b[..., 3] - self.y0) / self.side
        return np.stack([x1, y1, x2, y2], axis=-1)

    def box_from_crop(self, box_xyxy_norm: np.ndarray) -> np.ndarray:
        """Normalised x1,y1,x2,y2 in this crop → image x,y,w,h."""
        b = np.asarray(box_xyxy_norm, dtype=np.float64)
        x1 = b[..., 0] * self.side + self.x0
        y1 = b[..., 1] * self.side + self.y0
        w = (b[..., 2] - b[..., 0]) * self.side
        h = (b[..., 3] - b[..., 1]) * self.side
        return np.stack([x1, y1, w, h], axis=-1)


def crop_side(box_xywh: np.ndarray, factor: float) -> int:
    """Side of the square context window: ceil(sqrt(w·h)·factor), at least one pixel."""
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not (0 < factor < math.inf):
        raise DistilkitError(f"crop context factor must be a finite number > 0, got {factor!r}")
    w, h = float(box_xywh[2]), float(box_xywh[3])
    if not (w > 0 and h > 0) or not math.isfinite(w * h):
        raise DistilkitError(f"cannot crop around a box with non-positive size: {list(map(float, box_xywh))}")
    return max(1, math.ceil(math.sqrt(w * h) * factor))


def check_rgb_image(image: np.ndarray) -> None:
    """Frames are H×W×3 uint8 numpy arrays (RGB, 0-255); anything else is a clear error, not a bad crop."""
    if not isinstance(image, np.ndarray):
        raise DistilkitError(f"expected an H×W×3 uint8 numpy image, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise DistilkitError(f"expected an H×W×3 image, got shape {tuple(image.shape)}")
    if image.dtype != np.uint8:  # a float image in [0, 1] would silently become a black crop
        raise DistilkitError(f"expected a uint8 RGB image (0-255), got dtype {image.dtype}")


def crop_around(
    image: np.ndarray,
    box_xywh: np.ndarray,
    factor: float,
    output_size: int,
    center_shift: tuple[float, float] = (0.0, 0.0),
    scale: float = 1.0,
) -> tuple[np.ndarray, CropWindow]:
    """Cut the square context window around `box_xywh` (optionally shifted/rescaled, for training
    jitter), zero-pad outside the image and resize to `output_size`. Returns (crop uint8, window)."""
    check_rgb_image(image)
    side = max(1, math.ceil(crop_side(box_xywh, factor) * scale))
    cx = float(box_xywh[0]) + float(box_xywh[2]) / 2 + center_shift[0]
    cy = float(box_xywh[1]) + float(box_xywh[3]) / 2 + center_shift[1]
    x0 = round(cx - side / 2)
    y0 = round(cy - side / 2)
    h, w = image.shape[:2]
    patch = np.zeros((side, side, 3), dtype=np.uint8)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + side, w), min(y0 + side, h)
    if sx1 > sx0 and sy1 > sy0:
        patch[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    if side != output_size:
        patch = np.array(Image.fromarray(patch).resize((output_size, output_size), Image.BILINEAR))
    return patch, CropWindow(float(x0), float(y0), float(side), output_size)


def clip_box(box_xywh: np.ndarray, image_hw: tuple[int, int], margin: float = 10.0) -> np.ndarray:
    """Clip an x,y,w,h box to the image, keeping at least `margin` px of it inside (official rule)."""
    h, w = image_hw
    x1, y1 = float(box_xywh[0]), float(box_xywh[1])
    x2, y2 = x1 + float(box_xywh[2]), y1 + float(box_xywh[3])
    x1 = min(max(0.0, x1), w - margin)
    y1 = min(max(0.0, y1), h - margin)
    x2 = max(min(float(w), x2), margin)
    y2 = max(min(float(h), y2), margin)
    return np.array([x1, y1, max(margin, x2 - x1), max(margin, y2 - y1)], dtype=np.float64)
