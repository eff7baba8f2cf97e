"""The built-in image-classification data: six textured shapes (disk, square, triangle, ring, cross, bar) cut
from one scikit-image photo over a dimmed background cut from another; generated, so nothing is downloaded.

Item i of a split depends only on (seed, split, i): any order, any number of DataLoader workers and a resumed
run see the same images; the train and test splits never share an image.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from PIL import Image

from distilkit.checks import as_int
from distilkit.errors import DistilkitError
from distilkit.limits import MAX_CROP, MAX_SAMPLES

SHAPES = ("disk", "square", "triangle", "ring", "cross", "bar")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "brick", "grass", "gravel", "camera", "coins", "moon")
SPLITS = {"train": 0, "test": 1}
#: Pixel normalisation of the generated images: (x - MEAN) / STD on [0, 1] values.
MEAN, STD = 0.5, 0.25
#: Generated images are kept once drawn while a split fits in this many bytes (epochs after the first draw nothing).
CACHE_BYTES = 512 * 2**20


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    """The scikit-image photos as float RGB in [0, 1] (loaded once per process)."""
    import skimage.data

    out = []
    for name in PHOTOS:
        img = np.asarray(getattr(skimage.data, name)(), dtype=np.float32) / 255.0
        out.append(np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3])
    return tuple(out)


def _crop(photo: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    side = int(rng.integers(min(size, min(photo.shape[:2]) // 2 - 1), min(photo.shape[:2]) // 2))
    y, x = (int(rng.integers(0, photo.shape[i] - side)) for i in (0, 1))
    patch = Image.fromarray((photo[y : y + side, x : x + side] * 255).astype(np.uint8))
    return np.asarray(patch.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0


def shape_mask(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A boolean (size, size) mask of `shape` at a random position, size and angle."""
    r = rng.uniform(0.22, 0.36) * size
    cy, cx = rng.uniform(r + 1, size - r - 1, 2)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    u = (xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)
    v = -(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle)
    if shape == "disk":
        return np.hypot(u, v) <= r
    if shape == "ring":
        return (np.hypot(u, v) <= r) & (np.hypot(u, v) >= 0.55 * r)
    if shape == "square":
        return np.maximum(abs(u), abs(v)) <= 0.8 * r
    if shape == "bar":
        return (abs(u) <= r) & (abs(v) <= 0.35 * r)
    if shape == "cross":
        return (np.minimum(abs(u), abs(v)) <= 0.3 * r) & (np.maximum(abs(u), abs(v)) <= r)
    inside = np.ones_like(u, dtype=bool)  # triangle: three half-planes at 120° around the centre
    for k in range(3):
        a = 2 * math.pi * k / 3
        inside &= u * math.cos(a) + v * math.sin(a) <= 0.5 * r
    return inside


def draw(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One (size, size, 3) float image in [0, 1] of shape `label`: bright texture over a dim background."""
    photos = _photos()
    fg, bg = rng.choice(len(photos), 2, replace=False)
    background = _crop(photos[bg], size, rng) * rng.uniform(0.2, 0.45)  # dim background: a clear silhouette
    texture = 0.5 + 0.5 * _crop(photos[fg], size, rng) * rng.uniform(0.6, 1.0, 3)
    mask = shape_mask(SHAPES[label], size, rng)[..., None]
    return np.clip(np.where(mask, texture, background), 0, 1).astype(np.float32)


class GeneratedShapes(torch.utils.data.Dataset):
    """`num_images` generated images of the six shapes at `image_size` px: items are (normalised float tensor
    3×S×S, label); `targets` lists the labels without drawing any image. Drawn images are kept in memory when
    the split fits in `CACHE_BYTES` (per process: DataLoader workers keep their own)."""

    def __init__(self, num_images: int, image_size: int = 32, split: str = "train", seed: int = 0):
        self.num_images = as_int(num_images, "num_images", minimum=1)
        if self.num_images > MAX_SAMPLES:
            raise DistilkitError(f"num_images must be <= {MAX_SAMPLES:,}, got {self.num_images:,}")
        self.image_size = as_int(image_size, "image_size", minimum=8)
        if self.image_size > MAX_CROP:
            raise DistilkitError(f"image_size must be <= {MAX_CROP}, got {self.image_size}")
        if split not in SPLITS:
            raise DistilkitError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        self.split, self.seed = split, as_int(seed, "seed", minimum=0)
        self.classes = list(SHAPES)
        self.name = f"shapes-{split}"
        fits = self.num_images * 3 * self.image_size**2 * 4 <= CACHE_BYTES
        self._cache: dict[int, tuple[torch.Tensor, int]] | None = {} if fits else None

    def __len__(self) -> int:
        return self.num_images

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, SPLITS[self.split], index])

    @functools.cached_property
    def targets(self) -> list[int]:
        return [int(self._rng(i).integers(len(SHAPES))) for i in range(self.num_images)]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.num_images:
            raise IndexError(index)
        if self._cache is not None and index in self._cache:
            image, label = self._cache[index]
            return image.clone(), label
        rng = self._rng(index)
        label = int(rng.integers(len(SHAPES)))
        image = (torch.from_numpy(draw(label, self.image_size, rng)).permute(2, 0, 1) - MEAN) / STD
        if self._cache is not None:
            self._cache[index] = (image, label)
        return image.clone(), label
