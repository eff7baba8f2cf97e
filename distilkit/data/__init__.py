"""Tracking data: the `Sequence` type, embedded synthetic videos, benchmark readers, crops, training pairs.

Names are imported on first use (PEP 562), so torch-free users (crops, the ImageNet normalisation, sequence files:
what `distilkit.deploy.OnnxTracker` needs) do not import torch through this package.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Augment": "augment",
    "CropWindow": "crop", "check_rgb_image": "crop", "clip_box": "crop", "crop_around": "crop", "crop_side": "crop",
    "COCO": "readers", "GOT10k": "readers", "LaSOT": "readers", "TrackingNet": "readers",
    "PairSampler": "sampler", "denormalize_image": "sampler", "jitter_box": "sampler", "normalize_image": "sampler",
    "IMAGENET_MEAN": "normalize", "IMAGENET_STD": "normalize", "normalize_patch": "normalize",
    "Sequence": "sequence", "load_image": "sequence", "read_boxes": "sequence", "read_flags": "sequence",
    "load_datasets": "spec",
    "SyntheticTracking": "synthetic",
}

__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
