"""Calling a model with inputs in the three forms the toolkit accepts: tensor, tuple/list, dict."""

from __future__ import annotations

from typing import Any, Mapping, Union

import torch
from torch import nn

from distilkit.errors import DistilkitError

Inputs = Union[torch.Tensor, tuple, list, Mapping[str, Any]]


def call_model(model: nn.Module, inputs: Inputs) -> Any:
    """Forward `inputs` the way a user would: a tensor positionally, a tuple/list unpacked, a mapping as kwargs.

    The one calling convention of the toolkit (profiling, width/depth pruning, `Distiller`'s default forward);
    anything else is a DistilkitError: adapt it with a function of your own (e.g. `Distiller(forward_fn=...)`)."""
    if isinstance(inputs, torch.Tensor):
        return model(inputs)
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    raise DistilkitError(
        "model inputs must be a tensor, a tuple/list of positional arguments or a dict of keyword arguments, "
        f"got {type(inputs).__name__}"
    )
