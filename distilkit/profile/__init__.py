"""Exact model cost: params, MACs per module (linear, conv, matmul, attention incl. SDPA), latency."""

from __future__ import annotations

from distilkit.profile.analytic import layer_macs
from distilkit.profile.counter import UncountedOpsWarning, param_counts, profile
from distilkit.profile.ops import attention_pairs
from distilkit.profile.reference import fvcore_macs
from distilkit.profile.result import ModuleCost, Profile
from distilkit.profile.timing import Timing, latency, time_calls

__all__ = [
    "ModuleCost", "Profile", "Timing", "UncountedOpsWarning", "attention_pairs", "fvcore_macs", "latency", "layer_macs",
    "param_counts", "profile", "time_calls",
]
