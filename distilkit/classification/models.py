"""ViT classifier presets (timm VisionTransformer, never pretrained weights, never a download) and their overrides."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from distilkit.errors import DistilkitError
from distilkit.limits import MAX_CLASSES, MAX_CROP, MAX_IMAGE_INPUT, MAX_LAYERS, MAX_MLP_RATIO, MAX_MODEL_PARAMS, MAX_WIDTH

_TINY = {"architecture": "vit_tiny_patch16_224", "img_size": 224, "patch_size": 16, "embed_dim": 192, "depth": 12,
         "num_heads": 3, "mlp_ratio": 4.0, "num_classes": 1000}
#: name → timm architecture and its arguments: DeiT/ViT sizes at 224 px, and the narrow 32 px models of the
#: generated six-shapes demo (`-shapes`: patch 8, 16 tokens, 6 classes).
VIT_PRESETS: dict[str, dict[str, Any]] = {
    "vit-ti": _TINY,
    "vit-s": {**_TINY, "architecture": "vit_small_patch16_224", "embed_dim": 384, "num_heads": 6},
    "vit-b": {**_TINY, "architecture": "vit_base_patch16_224", "embed_dim": 768, "num_heads": 12},
    "vit-ti-shapes": {**_TINY, "img_size": 32, "patch_size": 8, "embed_dim": 64, "num_heads": 4, "num_classes": 6},
    "vit-s-shapes": {**_TINY, "img_size": 32, "patch_size": 8, "embed_dim": 96, "num_heads": 4, "num_classes": 6},
}
#: What a recipe may override, with its type and cap.
OVERRIDE_TYPES: dict[str, type] = {"img_size": int, "patch_size": int, "embed_dim": int, "depth": int, "num_heads": int,
                                   "mlp_ratio": float, "num_classes": int, "drop_path_rate": float}
OVERRIDE_CAPS: dict[str, float] = {"img_size": MAX_IMAGE_INPUT, "patch_size": MAX_CROP, "embed_dim": MAX_WIDTH,
                                   "depth": MAX_LAYERS, "num_heads": MAX_WIDTH, "mlp_ratio": MAX_MLP_RATIO,
                                   "num_classes": MAX_CLASSES, "drop_path_rate": 1.0}


def preset_config(preset: str, **overrides: Any) -> dict[str, Any]:
    """The preset's timm arguments with `overrides`, checked (known keys, types, caps, shapes that fit together)."""
    if preset not in VIT_PRESETS:
        raise DistilkitError(f"unknown ViT preset {preset!r}; expected one of {sorted(VIT_PRESETS)}")
    unknown = sorted(set(overrides) - set(OVERRIDE_TYPES))
    if unknown:
        raise DistilkitError(f"{preset}: unknown override(s) {unknown}; expected some of {sorted(OVERRIDE_TYPES)}")
    config = {**VIT_PRESETS[preset], **overrides}
    for key, kind in OVERRIDE_TYPES.items():
        value = config[key] if key in config else 0.0
        if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise DistilkitError(f"{preset}: {key} must be a positive integer, got {value!r}")
        if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                              or value < 0):
            raise DistilkitError(f"{preset}: {key} must be a finite number >= 0, got {value!r}")
        if value > OVERRIDE_CAPS[key]:
            raise DistilkitError(f"{preset}: {key} must be <= {OVERRIDE_CAPS[key]:g}, got {value!r}")
    if config["embed_dim"] % config["num_heads"]:
        raise DistilkitError(f"{preset}: embed_dim {config['embed_dim']} is not divisible by num_heads {config['num_heads']}")
    if config["img_size"] % config["patch_size"]:
        raise DistilkitError(f"{preset}: img_size {config['img_size']} is not divisible by patch_size {config['patch_size']}")
    if config["mlp_ratio"] <= 0:
        raise DistilkitError(f"{preset}: mlp_ratio must be > 0, got {config['mlp_ratio']}")
    if config.get("drop_path_rate", 0.0) >= 1:
        raise DistilkitError(f"{preset}: drop_path_rate must be < 1, got {config['drop_path_rate']}")
    dim, hidden = config["embed_dim"], int(config["embed_dim"] * config["mlp_ratio"])
    params = config["depth"] * (4 * dim * dim + 2 * dim * hidden)
    if params > MAX_MODEL_PARAMS:
        raise DistilkitError(f"{preset}: about {params:,} parameters, more than the {MAX_MODEL_PARAMS:,} allowed")
    return config


def build_vit(preset: str, **overrides: Any) -> nn.Module:
    """A fresh timm VisionTransformer of `preset` with `overrides` (img_size, patch_size, embed_dim, depth,
    num_heads, mlp_ratio, num_classes, drop_path_rate); saved and loaded by `distilkit.io` like any timm model."""
    import timm

    config = preset_config(preset, **overrides)
    architecture = config.pop("architecture")
    return timm.create_model(architecture, pretrained=False, **config)
