"""Calling a model with example inputs in the three forms the toolkit accepts: tensor, tuple, dict."""

from __future__ import annotations

from typing import Any, Mapping, Union

import torch
from torch import nn

from distilkit.errors import DistilkitError

Inputs = Union[torch.Tensor, tuple, list, Mapping[str, Any]]


def call_model(model: nn.Module, inputs: Inputs) -> Any:
    """Forward `inputs` the way a user would: a tensor positionally, a tuple/list unpacked, a mapping as kwargs."""
    if isinstance(inputs, torch.Tensor):
        return model(inputs)
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    raise DistilkitError(
        f"example inputs must be a tensor, a tuple/list or a dict of keyword arguments, got {type(inputs).__name__}"
    )
