"""ImageNet mean/std normalisation of uint8 crops, in NumPy: what every tracker and exported graph expects."""

from __future__ import annotations

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def normalize_patch(patch: np.ndarray) -> np.ndarray:
    """H×W×3 uint8 crop → contiguous (1, 3, H, W) float32 array: pixels / 255, minus mean, over std (per channel)."""
    x = (patch.astype(np.float32) / np.float32(255.0) - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])
