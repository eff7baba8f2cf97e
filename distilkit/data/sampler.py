"""Training pairs for trackers: (template, online template, search) crops with STARK/MixFormer jitter.

Deterministic per (seed, epoch, index) with its own generator (no global RNG), so any number of
DataLoader workers yields the same samples. Positives: search frame with the target visible,
template and online template visible frames within `max_gap` of it (online template between the
two, as it would be at tracking time); a single-image sequence (COCO) gives all three crops from its
one image, as the official sampler does. Negatives (score-head training, as the official sampler does): with
probability `negative_prob` either a frame of the same video where the target is invisible,
cropped around a central box, or a search crop from another sequence; label 0, zero box.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from distilkit.checks import as_int, as_number
from distilkit.data.augment import DRAWS, Augment
from distilkit.data.crop import crop_around
from distilkit.data.normalize import IMAGENET_MEAN, IMAGENET_STD
from distilkit.data.sequence import Sequence, sized_boxes
from distilkit.errors import DistilkitError

_MAX_TRIES = 100
#: How datasets are drawn: by their sequence counts, or each with equal probability (official MixFormerV2: 1:1:1:1).
DATASET_WEIGHTS = ("sequences", "equal")


def normalize_image(image: np.ndarray, brightness: float = 1.0) -> torch.Tensor:
    """H×W×3 uint8 → 3×H×W float tensor with ImageNet mean/std normalisation; `brightness` ≠ 1 first scales
    the pixels, clamped to [0, 255] (the official ToTensorAndJitter)."""
    x = image.astype(np.float32) / 255.0 if brightness == 1.0 else \
        np.clip(image.astype(np.float32) * np.float32(brightness / 255.0), 0.0, 1.0)
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def denormalize_image(tensor: torch.Tensor) -> np.ndarray:
    """Inverse of `normalize_image`: 3×H×W float tensor → H×W×3 uint8."""
    x = tensor.detach().cpu().numpy().transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def jitter_box(box_xywh: np.ndarray, rng: np.random.Generator, center_jitter: float, scale_jitter: float) -> np.ndarray:
    """STARK's jitter: size × exp(N(0,1)·scale_jitter) per axis, centre moved uniformly within
    ±0.5·center_jitter·sqrt(jittered w·h) per axis."""
    size = box_xywh[2:] * np.exp(rng.standard_normal(2) * scale_jitter)
    max_offset = math.sqrt(float(size.prod())) * center_jitter
    center = box_xywh[:2] + 0.5 * box_xywh[2:] + max_offset * (rng.random(2) - 0.5)
    return np.concatenate([center - 0.5 * size, size])


def _usable(seq: Sequence) -> np.ndarray:
    return seq.visible & sized_boxes(seq.boxes)


def check_negatives_possible(datasets: list) -> None:
    """Negative search crops come from frames of a sampled video where the target is invisible, or from
    another video with a visible target; when neither exists (one fully visible video, or beside it only
    videos without a visible target) that is said now rather than mid-training. Stops early: usually
    after the first two sequences."""
    usable = 0
    for d in datasets:
        for i in range(len(d)):
            seq = d[i]
            if _usable(seq).any():
                usable += 1
                if usable >= 2 or (~seq.visible).any():
                    return
    raise DistilkitError("negative samples need a second sequence with a visible target, or frames where the target "
                         "is invisible in a sequence where it is also visible; give more training sequences")


class PairSampler(torch.utils.data.Dataset):
    """`samples_per_epoch` training samples drawn from `datasets`; a dataset is anything indexable that yields
    `Sequence`s (a list of sequences works too). `dataset_weights="sequences"` draws a dataset with probability
    proportional to its sequence count, `"equal"` draws every non-empty dataset equally often (the official
    1 : 1 : 1 : 1 of GOT-10k, LaSOT, COCO and TrackingNet); the sequence is then uniform within it.

    Each item is a dict of float tensors: `template`, `online_template` (3×t×t), `search` (3×s×s),
    `search_box` (4,) normalised x1,y1,x2,y2 in the search crop clamped to [0, 1], `label` (1 / 0)
    and `visible`. Call `set_epoch(e)` each epoch for fresh samples. `augment` (`distilkit.data.Augment`)
    adds the official grayscale, brightness and flip augmentation (the box follows a mirrored search crop).
    """

    def __init__(
        self,
        datasets,
        template_size: int,
        search_size: int,
        template_factor: float = 2.0,
        search_factor: float = 4.5,
        center_jitter: float = 4.5,
        scale_jitter: float = 0.5,
        max_gap: int = 200,
        samples_per_epoch: int = 60000,
        negative_prob: float = 0.0,
        seed: int = 0,
        template_center_jitter: float = 0.0,
        template_scale_jitter: float = 0.0,
        dataset_weights: str = "sequences",
        augment: Augment | None = None,
    ):
        self.datasets = list(datasets) if isinstance(datasets, (list, tuple)) else [datasets]
        if self.datasets and all(isinstance(d, Sequence) for d in self.datasets):
            self.datasets = [self.datasets]  # a plain list of sequences is one dataset
        sizes = np.array([len(d) for d in self.datasets], dtype=np.float64)
        if not self.datasets or sizes.sum() == 0:
            raise DistilkitError("PairSampler needs at least one non-empty dataset")
        if dataset_weights not in DATASET_WEIGHTS:
            raise DistilkitError(f"dataset_weights must be one of {', '.join(DATASET_WEIGHTS)}, got {dataset_weights!r}")
        if not 0.0 <= as_number(negative_prob, "negative_prob") <= 1.0:
            raise DistilkitError(f"negative_prob must be in [0, 1], got {negative_prob}")
        self.template_size = as_int(template_size, "template_size", minimum=1)
        self.search_size = as_int(search_size, "search_size", minimum=1)
        self.template_factor = as_number(template_factor, "template_factor", above=0)
        self.search_factor = as_number(search_factor, "search_factor", above=0)
        self.center_jitter = as_number(center_jitter, "center_jitter", minimum=0)
        self.scale_jitter = as_number(scale_jitter, "scale_jitter", minimum=0)
        self.template_center_jitter = as_number(template_center_jitter, "template_center_jitter", minimum=0)
        self.template_scale_jitter = as_number(template_scale_jitter, "template_scale_jitter", minimum=0)
        self.max_gap = as_int(max_gap, "max_gap", minimum=0)
        self.samples_per_epoch = as_int(samples_per_epoch, "samples_per_epoch", minimum=1)
        self.negative_prob, self.seed, self.epoch = float(negative_prob), as_int(seed, "seed", minimum=0), 0
        if augment is not None and not isinstance(augment, Augment):
            raise DistilkitError(f"augment must be a distilkit.data.Augment, got {type(augment).__name__}")
        self.augment = augment or Augment()
        if negative_prob > 0:
            check_negatives_possible(self.datasets)
        self.dataset_weights = dataset_weights
        weights = sizes if dataset_weights == "sequences" else (sizes > 0).astype(np.float64)
        self.p_datasets = weights / weights.sum()

    def warm_up(self) -> None:
        """Let every dataset that can prepare its sequences in this process do so (`SyntheticTracking.warm_up`),
        before DataLoader workers fork from it."""
        for dataset in self.datasets:
            if hasattr(dataset, "warm_up"):
                dataset.warm_up()

    def set_epoch(self, epoch: int) -> None:
        """Samples depend on (seed, epoch, index). DataLoader workers hold a copy of the sampler: with
        `persistent_workers=True` they keep the epoch they started with, so leave that off."""
        self.epoch = as_int(epoch, "epoch", minimum=0)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        negative = rng.random() < self.negative_prob
        for _ in range(_MAX_TRIES):
            d, seq = self._pick_sequence(rng)
            frames = self._pick_frames(rng, seq)
            if frames is None:
                continue
            t, o, s = frames
            template = self._template(seq, t, rng)
            online = self._template(seq, o, rng)
            search = self._negative_search(rng, seq, d, template_box=seq.boxes[t]) if negative \
                else self._positive_search(rng, seq, s)
            if search is None:
                continue
            image, box, label = search
            crops, factors = [template, online, image], [1.0, 1.0, 1.0]
            if self.augment.active:  # drawn after the sample, so augmenting never changes which sample it is
                crops, factors, box = self.augment.apply(crops, box, label == 1.0, rng.random(DRAWS))
            template, online, image = (normalize_image(c, f) for c, f in zip(crops, factors))
            return {"template": template, "online_template": online, "search": image,
                    "search_box": torch.as_tensor(box, dtype=torch.float32),
                    "label": torch.tensor(label, dtype=torch.float32),
                    "visible": torch.tensor(label, dtype=torch.float32)}
        raise DistilkitError(f"PairSampler: no usable sample after {_MAX_TRIES} tries (too few visible frames?)")

    def _pick_sequence(self, rng: np.random.Generator) -> tuple[int, Sequence]:
        d = int(rng.choice(len(self.datasets), p=self.p_datasets))
        return d, self.datasets[d][int(rng.integers(len(self.datasets[d])))]

    def _pick_frames(self, rng: np.random.Generator, seq: Sequence) -> tuple[int, int, int] | None:
        """(template, online template, search) visible frames: template within max_gap of the search
        frame, online template between the two (as it would be at tracking time)."""
        usable = np.flatnonzero(_usable(seq))
        if usable.size == 0:
            return None
        s = int(rng.choice(usable))
        near = usable[np.abs(usable - s) <= self.max_gap]
        t = int(rng.choice(near))
        o = int(rng.choice(near[(near >= min(t, s)) & (near <= max(t, s))]))
        return t, o, s

    def _template(self, seq: Sequence, i: int, rng: np.random.Generator) -> np.ndarray:
        box = seq.boxes[i]
        if self.template_center_jitter or self.template_scale_jitter:
            box = jitter_box(box, rng, self.template_center_jitter, self.template_scale_jitter)
        crop, _ = crop_around(seq.frame(i), box, self.template_factor, self.template_size)
        return crop

    def _search_crop(self, image: np.ndarray, around: np.ndarray, target: np.ndarray | None, rng, jitter: bool):
        box = jitter_box(around, rng, self.center_jitter, self.scale_jitter) if jitter else around
        crop, window = crop_around(image, box, self.search_factor, self.search_size)
        target_box = np.zeros(4) if target is None else np.clip(window.box_to_crop(target), 0.0, 1.0)
        return crop, target_box

    def _positive_search(self, rng: np.random.Generator, seq: Sequence, s: int):
        """A jittered crop around the target; None (draw again, as pytracking's samplers do) when the
        jitter pushed the target wholly out of the crop, which a label of 1 would misstate."""
        image, box = self._search_crop(seq.frame(s), seq.boxes[s], seq.boxes[s], rng, jitter=True)
        if box[2] <= box[0] or box[3] <= box[1]:
            return None
        return image, box, 1.0

    def _negative_search(self, rng: np.random.Generator, seq: Sequence, d: int, template_box: np.ndarray):
        """A frame where the target is invisible (same video, central box) or a crop from another video."""
        invisible = np.flatnonzero(~seq.visible)
        total = sum(len(x) for x in self.datasets)
        use_same = invisible.size > 0 and (total < 2 or rng.random() < 0.5)
        if use_same:
            s = int(rng.choice(invisible))
            image = seq.frame(s)
            h, w = image.shape[:2]
            size = np.minimum(template_box[2:], [w, h])
            centre = np.array([w / 2 - size[0] / 2, h / 2 - size[1] / 2, size[0], size[1]])
            crop, _ = self._search_crop(image, centre, None, rng, jitter=True)
            return crop, np.zeros(4), 0.0
        if total < 2:
            raise DistilkitError("negative samples need a second sequence or frames where the target is invisible")
        for _ in range(_MAX_TRIES):
            d2, other = self._pick_sequence(rng)
            if other.name == seq.name and d2 == d:
                continue
            usable = np.flatnonzero(_usable(other))
            if usable.size:
                s = int(rng.choice(usable))
                crop, _ = self._search_crop(other.frame(s), other.boxes[s], None, rng, jitter=True)
                return crop, np.zeros(4), 0.0
        return None
