"""Tracking data: the `Sequence` type, embedded synthetic videos, benchmark readers, crops, training pairs."""

from __future__ import annotations

from distilkit.data.augment import Augment
from distilkit.data.crop import CropWindow, check_rgb_image, clip_box, crop_around, crop_side
from distilkit.data.readers import COCO, GOT10k, LaSOT, TrackingNet
from distilkit.data.sampler import PairSampler, denormalize_image, jitter_box, normalize_image
from distilkit.data.sequence import Sequence, load_image, read_boxes, read_flags
from distilkit.data.spec import load_datasets
from distilkit.data.synthetic import SyntheticTracking

__all__ = [
    "CropWindow", "check_rgb_image", "clip_box", "crop_around", "crop_side",
    "COCO", "GOT10k", "LaSOT", "TrackingNet",
    "Augment", "PairSampler", "denormalize_image", "jitter_box", "normalize_image",
    "Sequence", "load_image", "read_boxes", "read_flags",
    "load_datasets", "SyntheticTracking",
]
