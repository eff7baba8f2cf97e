"""MixFormerV2 family: MixViT teachers, T4-head students, official checkpoint loading, online tracker."""

from __future__ import annotations

from distilkit.trackers.mixformerv2.backbone import Block, MixedAttention, MixViTBackbone, TemplateKV
from distilkit.trackers.mixformerv2.checkpoint import LoadReport, load_official_checkpoint
from distilkit.trackers.mixformerv2.config import PRESETS, MixFormerV2Config
from distilkit.trackers.mixformerv2.heads import CornerHead, PyCornerHead, ScoreHead, T4Head
from distilkit.trackers.mixformerv2.mae import load_mae_backbone
from distilkit.trackers.mixformerv2.model import (
    CachedSearchStep, CachedTemplates, MixFormerV2, build_model, build_model_from_config,
)
from distilkit.trackers.mixformerv2.token_targets import corner_attention_targets, pool_bins
from distilkit.trackers.mixformerv2.tracker import MixFormerV2Tracker

__all__ = [
    "Block", "MixedAttention", "MixViTBackbone", "TemplateKV",
    "MixFormerV2Config", "PRESETS",
    "T4Head", "ScoreHead", "CornerHead", "PyCornerHead",
    "MixFormerV2", "CachedTemplates", "CachedSearchStep", "build_model", "build_model_from_config",
    "LoadReport", "load_official_checkpoint", "load_mae_backbone", "MixFormerV2Tracker",
    "corner_attention_targets", "pool_bins",
]
