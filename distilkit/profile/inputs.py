"""Calling a model with the three input forms the profiler accepts: tensor, tuple, dict of kwargs."""

from __future__ import annotations

from typing import Any, Mapping, Union

import torch
from torch import nn

from distilkit.errors import DistilkitError

Inputs = Union[torch.Tensor, tuple, list, Mapping[str, Any]]


def call_model(model: nn.Module, inputs: Inputs) -> Any:
    """model(inputs), model(*inputs) or model(**inputs), depending on the form of `inputs`."""
    if isinstance(inputs, torch.Tensor):
        return model(inputs)
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    raise DistilkitError(f"profile inputs must be a tensor, a tuple or a dict of keyword arguments, got {type(inputs).__name__}")


def describe_inputs(inputs: Inputs) -> dict[str, list[int]] | list[list[int]]:
    """Input shapes, for reports: a list for positional inputs, a dict for keyword inputs."""
    if isinstance(inputs, torch.Tensor):
        return [list(inputs.shape)]
    if isinstance(inputs, Mapping):
        return {k: list(v.shape) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    return [list(t.shape) for t in inputs if isinstance(t, torch.Tensor)]
