"""Block influence, 1 − cos(x_in, x_out): how much each block changes its input on real data."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from distilkit.blocks import resolve_blocks, unwrap
from distilkit.errors import DistilkitError
from distilkit.inputs import call_model


def first_tensor(value: Any) -> torch.Tensor | None:
    """The tensor a block passes on: itself, or the first element of a tuple/list output."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


def block_input(module: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """A block's residual stream x: its first positional input, or, when called with keywords only,
    the keyword naming `forward`'s first parameter (`b(mask=m, x=x)` gives x, not mask)."""
    if args:
        return first_tensor(args[0])
    value = kwargs.get(_first_parameter(type(module)))
    return value if isinstance(value, torch.Tensor) else None


@functools.cache
def _first_parameter(cls: type) -> str | None:
    params = [p for p in inspect.signature(cls.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return params[1].name if len(params) > 1 else None  # params[0] is self


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_to(v, device) for v in value)
    return value


@torch.no_grad()
def block_influence(
    model: nn.Module, batches: Iterable[Any], blocks: str = "blocks", dim: int = -1
) -> list[float]:
    """Per-block 1 − cos(x_in, x_out) along feature axis `dim`, averaged over all tokens of all
    `batches` (each a model input: tensor, tuple of positional args, or dict of kwargs).

    Low values mark blocks that barely change the stream: candidates for removal
    (`select_layers(depth, keep, "influence", scores=...)`). Runs in eval mode, restores the mode.
    """
    if isinstance(batches, torch.Tensor):  # iterating it would feed the model one sample at a time
        raise DistilkitError("block_influence: batches must be an iterable of model inputs, e.g. [x], not a tensor")
    net = unwrap(model)
    container = resolve_blocks(net, blocks)
    sums = [0.0] * len(container)
    counts = [0] * len(container)

    def make_hook(index: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            x_in, x_out = block_input(module, args, kwargs), first_tensor(output)
            if x_in is None or x_out is None or x_in.shape != x_out.shape:
                raise DistilkitError(
                    f"block_influence: block {index} ({type(module).__name__}) must map a tensor x to a "
                    f"tensor of the same shape; got {type(x_in).__name__} -> {type(x_out).__name__}"
                )
            cos = nn.functional.cosine_similarity(x_in.float(), x_out.float(), dim=dim)
            sums[index] += float((1.0 - cos).sum())
            counts[index] += cos.numel()

        return hook

    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    handles = [b.register_forward_hook(make_hook(i), with_kwargs=True) for i, b in enumerate(container)]
    was_training = net.training
    net.eval()
    try:
        for batch in batches:
            call_model(net, _to(batch, device))
    finally:
        for handle in handles:
            handle.remove()
        net.train(was_training)
    if counts[0] == 0:
        raise DistilkitError("block_influence: no calibration batches (the iterable was empty)")
    idle = [i for i, c in enumerate(counts) if c == 0]
    if idle:
        raise DistilkitError(f"block_influence: block {idle[0]} of {blocks!r} never ran in the model's forward "
                             "(its influence is unknown; remove it explicitly or check the forward)")
    return [s / c for s, c in zip(sums, counts)]
