"""Square context crops around a box, and the maps between image and crop coordinates.

Convention (MixFormerV2/STARK): side = ceil(sqrt(w·h)·factor), centred on the box centre,
zero-padded where it leaves the image, resized to `output_size` the way the official code does
(`cv2.copyMakeBorder` + `cv2.resize`, bilinear without antialiasing). Boxes inside the crop are
normalised xyxy in [0, 1] relative to the crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from distilkit.checks import as_int, as_number
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
    factor = as_number(factor, "crop context factor", above=0)
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
    if not image.shape[0] or not image.shape[1]:
        raise DistilkitError(f"expected an image with pixels, got shape {tuple(image.shape)}")


def _bilinear_taps(out: int, side: int, start: int, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Along one axis, for resizing the window [start, start + side) of an image `limit` pixels long to
    `out` pixels as cv2.resize(INTER_LINEAR) does (pixel centres aligned: src = (dst + 0.5)·side/out - 0.5;
    the window's edge pixels repeated beyond it): each output pixel's two source indices (clipped into
    the image) and their weights, zero for a source pixel outside the image (the zero padding)."""
    src = (np.arange(out, dtype=np.float64) + 0.5) * (side / out) - 0.5
    first = np.floor(src)
    frac = src - first
    before, after = first < 0, first >= side - 1
    first[before], frac[before] = 0, 0
    first[after], frac[after] = side - 1, 0
    a = first.astype(np.int64) + start
    b = np.minimum(first.astype(np.int64) + 1, side - 1) + start
    wa = (1 - frac) * ((a >= 0) & (a < limit))
    wb = frac * ((b >= 0) & (b < limit))
    return np.clip(a, 0, limit - 1), np.clip(b, 0, limit - 1), wa.astype(np.float32), wb.astype(np.float32)


def crop_around(
    image: np.ndarray,
    box_xywh: np.ndarray,
    factor: float,
    output_size: int,
    center_shift: tuple[float, float] = (0.0, 0.0),
    scale: float = 1.0,
) -> tuple[np.ndarray, CropWindow]:
    """Cut the square context window around `box_xywh` (optionally shifted/rescaled, for training
    jitter), zero-pad outside the image and resize to `output_size`. Returns (crop uint8, window).

    Matches the official `cv2.copyMakeBorder(..., BORDER_CONSTANT)` + `cv2.resize` to ±1 grey level
    (cv2 rounds in fixed point), without building the padded window: only the image pixels the
    output samples are read, so a window far larger than the image costs no more than a small one."""
    check_rgb_image(image)
    output_size = as_int(output_size, "crop output_size", minimum=1)
    side = max(1, math.ceil(crop_side(box_xywh, factor) * scale))
    cx = float(box_xywh[0]) + float(box_xywh[2]) / 2 + center_shift[0]
    cy = float(box_xywh[1]) + float(box_xywh[3]) / 2 + center_shift[1]
    x0 = round(cx - side / 2)
    y0 = round(cy - side / 2)
    window = CropWindow(float(x0), float(y0), float(side), output_size)
    h, w = image.shape[:2]
    ya, yb, wya, wyb = _bilinear_taps(output_size, side, y0, h)
    xa, xb, wxa, wxb = _bilinear_taps(output_size, side, x0, w)
    c0, c1 = int(xa.min()), int(xb.max()) + 1  # every second tap lies at or after its first
    strip = image[:, c0:c1]  # the columns the output samples; rows blended first, then columns
    rows = strip[ya] * wya[:, None, None]
    rows += strip[yb] * wyb[:, None, None]
    rows = rows.reshape(output_size, -1)  # channels interleaved: column c of the strip is 3c, 3c+1, 3c+2
    channels = np.arange(3)
    crop = rows[:, ((xa - c0)[:, None] * 3 + channels).ravel()] * np.repeat(wxa, 3)
    crop += rows[:, ((xb - c0)[:, None] * 3 + channels).ravel()] * np.repeat(wxb, 3)
    np.clip(np.rint(crop, out=crop), 0, 255, out=crop)
    return crop.astype(np.uint8).reshape(output_size, output_size, 3), window


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
