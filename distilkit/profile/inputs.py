"""Describing the profiler's example inputs (tensor, tuple, dict of kwargs) for reports."""

from __future__ import annotations

from typing import Mapping

import torch

from distilkit.inputs import Inputs


def describe_inputs(inputs: Inputs) -> dict[str, list[int]] | list[list[int]]:
    """Input shapes, for reports: a list for positional inputs, a dict for keyword inputs."""
    if isinstance(inputs, torch.Tensor):
        return [list(inputs.shape)]
    if isinstance(inputs, Mapping):
        return {k: list(v.shape) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    return [list(t.shape) for t in inputs if isinstance(t, torch.Tensor)]
