"""Embedded tracking data: deterministic videos composited from the photographs shipped with scikit-image.

A textured target (cut from one photo, rectangular, elliptical or rounded) moves smoothly over a
panning background photo, changes scale, aspect ratio and brightness, is passed by occluders
(partial and full) and accompanied by look-alike distractors cut from the same photo. Ground truth
is exact: the target is pasted at integer boxes whose mask touches all four box edges. Train and
test draw from disjoint photo pools and separate seed streams, so test sequences are unseen.
Frames are rendered lazily on access; boxes and visibility are computed analytically up front.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from distilkit.atomic import atomic_path
from distilkit.data.sequence import Sequence
from distilkit.data.textures import photo_variant, procedural_names, procedural_texture, resize_to_cover, variant_names
from distilkit.errors import DistilkitError
from distilkit.limits import MAX_IMAGE_SIDE, MAX_LENGTH, MAX_SEQUENCES, MIN_IMAGE_SIDE

TRAIN_PHOTOS = ("astronaut", "coffee", "rocket", "hubble_deep_field", "brick", "grass", "camera", "coins", "moon")
#: More scikit-image pictures for training only (never in the test pool).
EXTRA_TRAIN_PHOTOS = ("cell", "logo", "text", "microaneurysms", "shepp_logan_phantom", "checkerboard")
TEST_PHOTOS = ("chelsea", "immunohistochemistry", "retina", "colorwheel", "gravel", "clock", "page")
#: Training sources: the photos, 20 variants of each (crop, rotation, mirror, recolouring) and 400
#: procedural textures (distilkit.data.textures), so that a learned tracker does not memorise nine photos.
TRAIN_SOURCES = (TRAIN_PHOTOS + EXTRA_TRAIN_PHOTOS + variant_names(TRAIN_PHOTOS + EXTRA_TRAIN_PHOTOS, 20)
                 + procedural_names(400))
PHOTO_POOLS = {"train": TRAIN_SOURCES, "test": TEST_PHOTOS}
_SPLIT_STREAM = {"train": 0x7A11, "test": 0x7E57}
#: The built-in synthetic splits, defined once: `SyntheticTracking()` and `--data synthetic` default to them, and the
#: demo budgets of the shipped recipes use them (a test pins that), so every "synthetic test split" is one set of
#: videos: 40 held-out sequences of 60 frames at 192 × 144, seed 0.
DEMO_TRAIN_SEQUENCES, DEMO_TEST_SEQUENCES, DEMO_LENGTH, DEMO_IMAGE_SIZE = 200, 40, 60, (192, 144)
VISIBLE_MIN_FRACTION = 0.1  # target pixels that must stay unoccluded for the frame to count as visible
_SCENE_CACHE = 2048  # scenes kept per process (a scene is tens of kB; photos and textures are shared)
_CACHE_VERSION = 2  # 2: training videos draw from TRAIN_SOURCES (test videos are unchanged)


@functools.lru_cache(maxsize=32)
def _raw_photo(name: str) -> np.ndarray:
    """scikit-image picture `name` as RGB uint8 at its own size."""
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)())
    if name == "retina":  # dark border around the fundus: keep the centre
        h, w = img.shape[:2]
        img = img[int(0.2 * h) : int(0.8 * h), int(0.2 * w) : int(0.8 * w)]
    if img.dtype != np.uint8:  # bool masks and float phantoms (training extras only)
        img = np.round(np.clip(img.astype(np.float64) / max(float(img.max()), 1e-12), 0, 1) * 255)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


@functools.lru_cache(maxsize=1024)  # every training source once per DataLoader worker (about 140 kB each at 192×144)
def _photo(name: str, min_w: int, min_h: int) -> np.ndarray:
    """Source `name` (a photo, `photo@k` variant or `procedural-i` texture) as RGB uint8, resized once so
    that it covers at least min_w × min_h."""
    if name.startswith("procedural-"):
        return procedural_texture(int(name.rpartition("-")[2]), min_w, min_h)
    base, _, k = name.partition("@")
    if k:
        return photo_variant(_raw_photo(base), base, int(k), min_w, min_h)
    return resize_to_cover(_raw_photo(name), min_w, min_h)


@functools.lru_cache(maxsize=4096)
def _shape_mask(shape: str, w: int, h: int) -> np.ndarray:
    """Boolean h×w mask of the object silhouette; it touches all four edges, so the box is tight."""
    ys = (np.arange(h) + 0.5 - h / 2)[:, None]
    xs = (np.arange(w) + 0.5 - w / 2)[None, :]
    if shape == "ellipse":
        return (xs / (w / 2)) ** 2 + (ys / (h / 2)) ** 2 <= 1.0
    if shape == "rounded":
        r = 0.3 * min(w, h)
        dx = np.maximum(np.abs(xs) - (w / 2 - r), 0.0)
        dy = np.maximum(np.abs(ys) - (h / 2 - r), 0.0)
        return dx**2 + dy**2 <= r**2
    return np.ones((h, w), dtype=bool)


def _wave(rng: np.random.Generator, t: np.ndarray, amp: float, period: tuple[float, float]) -> np.ndarray:
    """Smooth random signal: a sinusoid with amplitude `amp`, random phase and period in frames."""
    return amp * np.sin(2 * np.pi * t / rng.uniform(*period) + rng.uniform(0, 2 * np.pi))


def _track(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Smooth position in [0, 1]: a sum of two slow sinusoids around a random centre."""
    a1, a2 = rng.uniform(0.2, 0.45), rng.uniform(0.0, 0.2)
    c = rng.uniform(0.5 - (0.5 - a1 - a2), 0.5 + (0.5 - a1 - a2)) if a1 + a2 < 0.5 else 0.5
    return np.clip(c + _wave(rng, t, a1, (70, 220)) + _wave(rng, t, a2, (25, 70)), 0.0, 1.0)


@dataclass
class _Layer:
    """One pasted patch per frame: texture, silhouette, integer boxes (N, 4) and active flags (N,)."""

    texture: Image.Image
    shape: str
    boxes: np.ndarray
    active: np.ndarray


class _Scene:
    """The parameters of one synthetic video; renders any frame independently."""

    def __init__(self, rng: np.random.Generator, photos: tuple[str, ...], length: int, size: tuple[int, int]):
        W, H = size
        self.size, self.length = size, length
        t = np.arange(length, dtype=np.float64)
        bg_name, tg_name = rng.choice(photos, size=2, replace=False)
        self.sources = (str(bg_name), str(tg_name))  # background and target source names
        self.background = _photo(str(bg_name), math.ceil(1.3 * W), math.ceil(1.3 * H))
        target_photo = _photo(str(tg_name), math.ceil(1.3 * W), math.ceil(1.3 * H))

        pan_x = self._pan(rng, t, self.background.shape[1] - W)
        pan_y = self._pan(rng, t, self.background.shape[0] - H)
        self.pan = np.stack([pan_x, pan_y], axis=1)
        self.brightness = 1.0 + _wave(rng, t, rng.uniform(0.0, 0.3), (40, 160))

        # target: base size, aspect ratio and smooth scale/aspect change, position kept inside the image
        base = rng.uniform(0.12, 0.28) * min(W, H)
        aspect = math.exp(rng.uniform(-math.log(2.2), math.log(2.2)))
        scale = np.exp(_wave(rng, t, rng.uniform(0.1, 0.45), (80, 250)))
        stretch = np.exp(_wave(rng, t, rng.uniform(0.0, 0.2), (50, 200)))
        w = np.clip(np.round(base * math.sqrt(aspect) * scale * np.sqrt(stretch)), 6, int(0.7 * W)).astype(int)
        h = np.clip(np.round(base / math.sqrt(aspect) * scale / np.sqrt(stretch)), 6, int(0.7 * H)).astype(int)
        x = np.round(_track(rng, t) * (W - w)).astype(int)
        y = np.round(_track(rng, t) * (H - h)).astype(int)
        self.shape = str(rng.choice(["rect", "ellipse", "rounded"]))
        tint = rng.uniform(0.65, 1.25, size=3)
        self.target = _Layer(self._texture(rng, target_photo, w.max(), h.max(), tint), self.shape,
                             np.stack([x, y, w, h], axis=1), np.ones(length, dtype=bool))

        self.distractors = []
        for _ in range(int(rng.choice([0, 1, 2], p=[0.35, 0.4, 0.25]))):
            f = rng.uniform(0.8, 1.2)
            dw = np.clip(np.round(w * f), 6, None).astype(int)
            dh = np.clip(np.round(h * f), 6, None).astype(int)
            dx = np.round(_track(rng, t) * (W - dw)).astype(int)
            dy = np.round(_track(rng, t) * (H - dh)).astype(int)
            tex = self._texture(rng, target_photo, dw.max(), dh.max(), tint * rng.uniform(0.9, 1.1, size=3))
            self.distractors.append(_Layer(tex, self.shape, np.stack([dx, dy, dw, dh], axis=1), np.ones(length, bool)))

        self.occluders = []
        n_events = int(rng.choice([0, 1, 2], p=[0.25, 0.45, 0.3]))
        for _ in range(n_events):
            dur = int(rng.integers(12, 31))
            if length < dur + 7:
                break
            start = int(rng.integers(5, length - dur - 1))
            span = slice(start, start + dur)
            full = bool(rng.random() < 0.5)
            f = rng.uniform(1.3, 1.6) if full else rng.uniform(0.5, 0.8)
            ow, oh = math.ceil(w[span].max() * f) + 4, math.ceil(h[span].max() * f) + 4
            cx, cy = x + w / 2, y + h / 2
            reach = (ow + w[span].max()) / 2 + 2
            rel_x = np.zeros(length)
            rel_x[span] = np.linspace(-reach, reach, dur) * (1 if rng.random() < 0.5 else -1)
            rel_y = 0.0 if full else rng.uniform(-0.5, 0.5) * h[span].max()
            ox = np.round(cx + rel_x - ow / 2).astype(int)
            oy = np.round(cy + rel_y - oh / 2).astype(int)
            active = np.zeros(length, dtype=bool)
            active[span] = True
            tex = self._texture(rng, self.background, ow, oh, rng.uniform(0.6, 1.2, size=3))
            boxes = np.stack([ox, oy, np.full(length, ow), np.full(length, oh)], axis=1)
            self.occluders.append(_Layer(tex, "rect", boxes, active))

        self.visible_fraction = np.array([self._visible_fraction(i) for i in range(length)])

    @staticmethod
    def _pan(rng: np.random.Generator, t: np.ndarray, slack: int) -> np.ndarray:
        centre = rng.uniform(0.3, 0.7) * slack
        amp = rng.uniform(0.0, 0.3) * slack
        return np.clip(np.round(centre + _wave(rng, t, amp, (100, 400))), 0, slack).astype(int)

    @staticmethod
    def _texture(rng: np.random.Generator, photo: np.ndarray, w: int, h: int, tint: np.ndarray) -> Image.Image:
        """Cut the most textured of a few random w×h windows of `photo` (flat sky makes no target), tinted."""
        ph, pw = photo.shape[:2]
        w, h = int(min(w, pw)), int(min(h, ph))
        corners = [(int(rng.integers(0, pw - w + 1)), int(rng.integers(0, ph - h + 1))) for _ in range(6)]
        x0, y0 = max(corners, key=lambda c: float(photo[c[1] : c[1] + h : 2, c[0] : c[0] + w : 2, 1].std()))
        patch = photo[y0 : y0 + h, x0 : x0 + w].astype(np.float32) * tint
        return Image.fromarray(np.clip(patch, 0, 255).astype(np.uint8))

    def _visible_fraction(self, i: int) -> float:
        x, y, w, h = self.target.boxes[i]
        mask = _shape_mask(self.shape, int(w), int(h))
        covered = np.zeros_like(mask)
        for occ in self.occluders:
            if occ.active[i]:
                ox, oy, ow, oh = occ.boxes[i]
                x0, y0 = max(ox - x, 0), max(oy - y, 0)
                x1, y1 = min(ox + ow - x, w), min(oy + oh - y, h)
                if x1 > x0 and y1 > y0:
                    covered[y0:y1, x0:x1] = True
        return float((mask & ~covered).sum() / mask.sum())

    def render(self, i: int) -> np.ndarray:
        W, H = self.size
        px, py = self.pan[i]
        frame = self.background[py : py + H, px : px + W].copy()
        for layer in (*self.distractors, self.target, *self.occluders):
            if layer.active[i]:
                _paste(frame, layer, i)
        lut = np.clip(np.arange(256) * self.brightness[i], 0, 255).astype(np.uint8)
        return np.take(lut, frame)


def _paste(frame: np.ndarray, layer: _Layer, i: int) -> None:
    """Paste the layer's texture, resized to its box at frame i, through its silhouette (clipped to the frame)."""
    x, y, w, h = (int(v) for v in layer.boxes[i])
    H, W = frame.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x1 <= x0 or y1 <= y0:
        return
    patch = np.asarray(layer.texture.resize((w, h), Image.BILINEAR))
    mask = _shape_mask(layer.shape, w, h)
    sl = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
    np.copyto(frame[y0:y1, x0:x1], patch[sl], where=mask[sl][..., None])


class _RenderedFrames(SequenceABC):
    """List-like view of a scene's frames; each access renders the frame (cheap, deterministic)."""

    def __init__(self, scene: _Scene):
        self._scene = scene

    def __len__(self) -> int:
        return self._scene.length

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self._scene.render(i % len(self))


class SyntheticTracking:
    """Deterministic synthetic tracking videos from scikit-image photos (no download needed).

    `dataset[i]` is a `Sequence` named `synthetic-<split>-<i>` whose frames render on access; the defaults are the
    demo splits (DEMO_*: `SyntheticTracking(split="test")` is the held-out set every demo report scores);
    with `cache_dir` the rendered frames are stored as .npz once and reloaded.
    """

    name = "synthetic"

    def __init__(
        self,
        num_sequences: int | None = None,
        length: int = DEMO_LENGTH,
        seed: int = 0,
        image_size: tuple[int, int] = DEMO_IMAGE_SIZE,
        split: str = "train",
        cache_dir: str | os.PathLike | None = None,
    ):
        if split not in PHOTO_POOLS:
            raise DistilkitError(f"synthetic split must be 'train' or 'test', got {split!r}")
        if num_sequences is None:
            num_sequences = DEMO_TRAIN_SEQUENCES if split == "train" else DEMO_TEST_SEQUENCES
        if not (1 <= num_sequences <= MAX_SEQUENCES and 2 <= length <= MAX_LENGTH):
            raise DistilkitError(f"synthetic data needs num_sequences in [1, {MAX_SEQUENCES}] and length in "
                                 f"[2, {MAX_LENGTH}], got {num_sequences}, {length}")
        W, H = (int(v) for v in image_size)
        if not (MIN_IMAGE_SIDE <= min(W, H) and max(W, H) <= MAX_IMAGE_SIDE):
            raise DistilkitError(f"synthetic image_size must be {MIN_IMAGE_SIDE} to {MAX_IMAGE_SIDE} px per side, got "
                                 f"{image_size}")
        self.num_sequences, self.length, self.seed = int(num_sequences), int(length), int(seed)
        self.image_size, self.split = (W, H), split
        self.photos = PHOTO_POOLS[split]
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None

    def __len__(self) -> int:
        return self.num_sequences

    @property
    def names(self) -> list[str]:
        """Sequence names, in order, without building any sequence (as the benchmark readers have)."""
        return [self._name(i) for i in range(len(self))]

    def _name(self, i: int) -> str:
        return f"synthetic-{self.split}-{i:04d}"

    def __repr__(self) -> str:
        return (f"SyntheticTracking(num_sequences={self.num_sequences}, length={self.length}, seed={self.seed}, "
                f"image_size={self.image_size}, split={self.split!r})")

    def __getitem__(self, i: int) -> Sequence:
        if not -len(self) <= i < len(self):
            raise IndexError(f"sequence index {i} out of range for {len(self)} sequences")
        i %= len(self)
        name = self._name(i)
        if self.cache_dir is not None:
            return self._cached(i, name)
        scene = self.scene(i)
        return Sequence(name, _RenderedFrames(scene), scene.target.boxes.astype(np.float64),
                        scene.visible_fraction >= VISIBLE_MIN_FRACTION, dataset=self.name,
                        attributes={"visible_fraction": scene.visible_fraction})

    def warm_up(self) -> None:
        """Build every scene now (up to the scene cache's size): DataLoader workers forked afterwards inherit them
        instead of each rebuilding them in every epoch."""
        for i in range(min(len(self), _SCENE_CACHE)):
            self.scene(i)

    @functools.lru_cache(maxsize=_SCENE_CACHE)  # noqa: B019 - the sampler revisits sequences; a scene is tens of kB
    def scene(self, i: int) -> _Scene:
        """The parameters of sequence i (deterministic in seed, split and i)."""
        rng = np.random.default_rng([self.seed, _SPLIT_STREAM[self.split], i])
        return _Scene(rng, self.photos, self.length, self.image_size)

    def _cached(self, i: int, name: str) -> Sequence:
        W, H = self.image_size
        path = self.cache_dir / f"v{_CACHE_VERSION}-{self.split}-seed{self.seed}-{W}x{H}-len{self.length}-{i:04d}.npz"
        if not path.exists():
            scene = self.scene(i)
            frames = np.stack([scene.render(j) for j in range(self.length)])
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, frames=frames, boxes=scene.target.boxes, visible_fraction=scene.visible_fraction)
        with np.load(path) as data:
            frames, boxes, frac = data["frames"], data["boxes"], data["visible_fraction"]
        return Sequence(name, list(frames), boxes.astype(np.float64), frac >= VISIBLE_MIN_FRACTION,
                        dataset=self.name, attributes={"visible_fraction": frac})
