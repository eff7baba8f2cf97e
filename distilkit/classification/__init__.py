"""Image classification with timm ViTs: generated and ImageFolder data, presets, top-1 accuracy, and the
`vit-classifier` recipe family (`distilkit.classification.family`)."""

from __future__ import annotations

from distilkit.classification.evaluate import top1_accuracy
from distilkit.classification.imagefolder import ImageFolder, check_same_classes, imagefolder_split
from distilkit.classification.models import VIT_PRESETS, build_vit, preset_config
from distilkit.classification.shapes import SHAPES, GeneratedShapes

__all__ = ["SHAPES", "VIT_PRESETS", "GeneratedShapes", "ImageFolder", "build_vit", "check_same_classes", "imagefolder_split",
           "preset_config", "top1_accuracy"]
