"""Training-only image sources for the synthetic videos: procedural textures and recoloured photo variants.

Nine photographs are too few for a learned tracker to generalise from: it memorises them. The
training split therefore also draws from seeded procedural textures (value noise, gratings, colour
regions, shape collages, checkers) and from geometric/colour variants of the training photographs.
Every source is named by a string (`procedural-17`, `astronaut@3`) and is a pure function of that
name, so training videos stay deterministic. The held-out test split never uses this module.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
from PIL import Image

PROCEDURAL_KINDS = ("noise", "gratings", "regions", "collage", "checker")
_PROCEDURAL_STREAM = 0x7E47
_VARIANT_STREAM = 0x7A21


def procedural_names(count: int) -> tuple[str, ...]:
    """`count` procedural source names, `procedural-0` … (each a different seeded texture)."""
    return tuple(f"procedural-{i}" for i in range(count))


def variant_names(photos: tuple[str, ...], per_photo: int) -> tuple[str, ...]:
    """`per_photo` variant names per photo (`astronaut@0` …): rotated, mirrored, cropped and recoloured copies."""
    return tuple(f"{p}@{k}" for p in photos for k in range(per_photo))


def is_generated(name: str) -> bool:
    """Whether `name` is a procedural texture or a photo variant rather than a plain photo name."""
    return name.startswith("procedural-") or "@" in name


def _smooth_noise(rng: np.random.Generator, w: int, h: int, cells: int, channels: int = 1) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid (about `cells` across) upsampled bicubically to h×w×channels."""
    gw, gh = max(2, cells), max(2, round(cells * h / w))
    out = np.empty((h, w, channels), dtype=np.float32)
    for c in range(channels):
        grid = rng.random((gh, gw)).astype(np.float32)
        out[..., c] = np.asarray(Image.fromarray(grid, mode="F").resize((w, h), Image.BICUBIC))
    return np.clip(out, 0.0, 1.0)


def _fractal_noise(rng: np.random.Generator, w: int, h: int, channels: int) -> np.ndarray:
    """Sum of 3-5 octaves of value noise with random persistence, rescaled to [0, 1] per channel."""
    octaves, persistence, base = int(rng.integers(3, 6)), rng.uniform(0.4, 0.8), int(rng.integers(2, 6))
    total = np.zeros((h, w, channels), dtype=np.float32)
    for o in range(octaves):
        total += persistence**o * _smooth_noise(rng, w, h, base * 2**o, channels)
    lo, hi = total.min(axis=(0, 1)), total.max(axis=(0, 1))
    return (total - lo) / np.maximum(hi - lo, 1e-6)


def _palette(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random RGB colours in [0, 1]."""
    return rng.random((n, 3)).astype(np.float32)


def _map_palette(values: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (h×w) through a piecewise-linear colour ramp over the palette's colours."""
    stops = np.linspace(0.0, 1.0, len(palette))
    return np.stack([np.interp(values, stops, palette[:, c]) for c in range(3)], axis=-1).astype(np.float32)


def _noise(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Coloured fractal noise: three noise fields mixed by a random colour matrix (clouds, marble, stains)."""
    fields = _fractal_noise(rng, w, h, 3)
    mix = rng.normal(0.0, 1.0, (3, 3)).astype(np.float32)
    img = fields @ mix
    lo, hi = img.min(axis=(0, 1)), img.max(axis=(0, 1))
    return (img - lo) / np.maximum(hi - lo, 1e-6)


def _gratings(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """1-3 sinusoidal gratings at random angles and periods, warped by noise, through a random palette."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    warp = (_fractal_noise(rng, w, h, 1)[..., 0] - 0.5) * rng.uniform(0.0, 25.0)
    value = np.zeros((h, w), dtype=np.float32)
    for _ in range(int(rng.integers(1, 4))):
        angle, period = rng.uniform(0, math.pi), rng.uniform(4.0, 40.0)
        value += np.sin(2 * math.pi * ((xs * math.cos(angle) + ys * math.sin(angle) + warp) / period) + rng.uniform(0, 6.3))
    value = (value - value.min()) / max(float(np.ptp(value)), 1e-6)
    return _map_palette(value, _palette(rng, int(rng.integers(2, 5))))


def _regions(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Flat colour regions (thresholded noise, 2-5 levels) with fine grain: camouflage, maps, fields."""
    levels = int(rng.integers(2, 6))
    field = _fractal_noise(rng, w, h, 1)[..., 0]
    cuts = np.quantile(field, np.linspace(0, 1, levels + 1)[1:-1])
    img = _palette(rng, levels)[np.digitize(field, cuts)]
    grain = (_smooth_noise(rng, w, h, max(8, w // 3), 3) - 0.5) * rng.uniform(0.0, 0.3)
    return np.clip(img + grain, 0.0, 1.0)


def _collage(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Random rectangles and ellipses in random colours over a noise background (clutter of small objects)."""
    img = _noise(rng, w, h) * rng.uniform(0.3, 1.0)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(int(rng.integers(8, 40))):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = rng.uniform(2, 0.25 * w), rng.uniform(2, 0.25 * h)
        if rng.random() < 0.5:
            mask = (np.abs(xs - cx) <= rx) & (np.abs(ys - cy) <= ry)
        else:
            mask = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1.0
        shade = 1.0 - rng.uniform(0.0, 0.4) * (ys - cy + ry) / (2 * ry)  # a little shading, not flat stickers
        img[mask] = np.clip(_palette(rng, 1)[0] * shade[mask][:, None], 0.0, 1.0)
    return img


def _checker(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A rotated checkerboard or grid of random cell size and colours, softly shaded by noise."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    angle, cell = rng.uniform(0, math.pi / 2), rng.uniform(4.0, 30.0)
    u = (xs * math.cos(angle) + ys * math.sin(angle)) / cell
    v = (-xs * math.sin(angle) + ys * math.cos(angle)) / cell
    cells = (np.floor(u) + np.floor(v)) % 2 if rng.random() < 0.6 else \
        ((u % 1) < 0.2) | ((v % 1) < 0.2)
    colours = _palette(rng, 2)
    img = colours[cells.astype(int)]
    return np.clip(img * (0.6 + 0.4 * _fractal_noise(rng, w, h, 1)), 0.0, 1.0)


_GENERATORS = {"noise": _noise, "gratings": _gratings, "regions": _regions, "collage": _collage, "checker": _checker}


def procedural_texture(index: int, min_w: int, min_h: int) -> np.ndarray:
    """Procedural texture number `index` as RGB uint8 of exactly min_w × min_h (kind cycles over PROCEDURAL_KINDS)."""
    rng = np.random.default_rng([_PROCEDURAL_STREAM, index])
    kind = PROCEDURAL_KINDS[index % len(PROCEDURAL_KINDS)]
    img = _GENERATORS[kind](rng, int(min_w), int(min_h))
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def resize_to_cover(img: np.ndarray, min_w: int, min_h: int) -> np.ndarray:
    """RGB uint8 `img` scaled (bilinear, aspect kept) so that it covers at least min_w × min_h."""
    h, w = img.shape[:2]
    s = max(min_w / w, min_h / h)
    size = (max(min_w, math.ceil(w * s)), max(min_h, math.ceil(h * s)))
    return np.asarray(Image.fromarray(img).resize(size, Image.BILINEAR))


def photo_variant(photo: np.ndarray, name: str, k: int, min_w: int, min_h: int) -> np.ndarray:
    """Variant `k` of an RGB uint8 photo, at least min_w × min_h: random crop (55-100 % per side), rotation by a
    multiple of 90°, mirror, channel permutation, per-channel gain and gamma; grayscale photos get a random colour
    ramp. The crop is resized before the colour work, which then costs little."""
    rng = np.random.default_rng([_VARIANT_STREAM, zlib.crc32(name.encode()), k])
    h, w = photo.shape[:2]
    cw, ch = max(16, int(w * rng.uniform(0.55, 1.0))), max(16, int(h * rng.uniform(0.55, 1.0)))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = np.rot90(photo[y0 : y0 + ch, x0 : x0 + cw], int(rng.integers(0, 4)))
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = resize_to_cover(np.ascontiguousarray(img), min_w, min_h)
    x = img.astype(np.float32) / 255.0
    if np.ptp(x - x[..., :1]) < 1e-6:  # grayscale photo: colourise through a random ramp
        x = _map_palette(x[..., 0], np.sort(_palette(rng, 3), axis=0) if rng.random() < 0.5 else _palette(rng, 3))
    else:
        x = x[..., rng.permutation(3)]
    x = np.clip(x * rng.uniform(0.7, 1.3, 3).astype(np.float32), 0.0, 1.0) ** rng.uniform(0.7, 1.4, 3).astype(np.float32)
    return np.ascontiguousarray((x * 255.0 + 0.5).astype(np.uint8))
