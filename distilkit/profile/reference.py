"""fvcore's own counts per module, to show beside ours (`distilkit flops --compare fvcore`).

fvcore's "flops" are MACs (one per multiply-accumulate), but it skips ops it has no handle for
(notably `scaled_dot_product_attention`) and adds LayerNorm/BatchNorm/upsampling into the same
total, so its figures differ from ours by exactly those ops.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from torch import nn

from distilkit.inputs import Inputs


class _KwargsToPositional(nn.Module):
    """fvcore traces with positional inputs only: adapt a model that takes keyword inputs."""

    def __init__(self, model: nn.Module, keys: list[str]) -> None:
        super().__init__()
        self.model = model
        self.keys = keys

    def forward(self, *args: Any) -> Any:
        return self.model(**dict(zip(self.keys, args)))


def fvcore_macs(model: nn.Module, inputs: Inputs) -> dict[str, int]:
    """fvcore `FlopCountAnalysis(...).by_module()` in MACs, keyed like `model.named_modules()`."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # fvcore imports torch.jit.script
        from fvcore.nn import FlopCountAnalysis

    prefix = ""
    if isinstance(inputs, Mapping):
        keys = list(inputs)
        target: nn.Module = _KwargsToPositional(model, keys)
        args: Any = tuple(inputs[k] for k in keys)
        prefix = "model."
    else:
        target, args = model, inputs
    was_training = model.training
    model.eval()
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about dynamic shapes, asserts
            analysis = FlopCountAnalysis(target, args).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            counts = analysis.by_module()
    finally:
        model.train(was_training)
    if not prefix:
        return {name: int(v) for name, v in counts.items()}
    out = {name[len(prefix):]: int(v) for name, v in counts.items() if name.startswith(prefix)}
    out[""] = int(counts[""])
    return out
