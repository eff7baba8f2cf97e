"""Generic distillation toolkit: corner-to-side marginals, distribution resampling, KD losses, attention and feature KD,
box losses, Distiller."""

from __future__ import annotations

from distilkit.distill.attention import attention_kd
from distilkit.distill.box import box_loss
from distilkit.distill.distiller import Distiller
from distilkit.distill.features import FeatureProjector, feature_kd
from distilkit.distill.heatmap import corner_to_sides, sides_to_box
from distilkit.distill.kd import distribution_kd, logit_kd
from distilkit.distill.resample import resample_distribution
from distilkit.inputs import call_model

__all__ = [
    "Distiller",
    "FeatureProjector",
    "attention_kd",
    "box_loss",
    "call_model",
    "corner_to_sides",
    "distribution_kd",
    "feature_kd",
    "logit_kd",
    "resample_distribution",
    "sides_to_box",
]
