"""Closed-form MACs of linear and conv layers from their shapes: an independent check of the counter.

Forward hooks record each layer's output shape; the MACs follow from the weight shape alone
(no dispatch-level counting), so `distilkit flops --strict` can compare the two.
"""

from __future__ import annotations

from math import prod

from torch import nn

from distilkit.inputs import Inputs, call_model

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def linear_macs(rows: int, in_features: int, out_features: int) -> int:
    """rows·in·out: one MAC per weight per input row (bias adds are not MACs)."""
    return rows * in_features * out_features


def conv_macs(out_elements: int, in_channels: int, groups: int, kernel: tuple[int, ...]) -> int:
    """Each output element sums (in/groups)·prod(kernel) products."""
    return out_elements * (in_channels // groups) * prod(kernel)


def layer_macs(model: nn.Module, inputs: Inputs) -> dict[str, int]:
    """MACs of every nn.Linear / nn.ConvNd in `model` over one forward, from shapes (eval mode)."""
    import torch

    found: dict[str, int] = {}

    def hook(name: str):  # type: ignore[no-untyped-def]
        def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if isinstance(module, nn.Linear):
                macs = linear_macs(output.numel() // module.out_features, module.in_features, module.out_features)
            else:
                macs = conv_macs(output.numel(), module.in_channels, module.groups, tuple(module.kernel_size))
            found[name] = found.get(name, 0) + macs

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, _LAYERS)]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            call_model(model, inputs)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return found
