"""`profile(model, inputs)`: exact MACs per module on top of torch's `FlopCounterMode`.

torch's counter supplies the dispatch-level interception and per-module attribution; `ops.py`
supplies the handles (mask-aware attention, vector products, other-op element counts). The
forward runs once in eval mode under `torch.inference_mode()`, with PyTorch's fused fast path of
`nn.MultiheadAttention` / `nn.TransformerEncoderLayer` switched off (its single fused op hides the
projections and attention from the counter); the model's mode and the fast-path flag are restored.
Ops that carry no handle are reported in `Profile.uncounted_ops` and with an `UncountedOpsWarning`.
"""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from distilkit.inputs import Inputs, call_model
from distilkit.profile.inputs import describe_inputs
from distilkit.profile.ops import DATA_OPS, OTHER_OP_NAME, handles, mac_ops
from distilkit.profile.result import ModuleCost, Profile


class UncountedOpsWarning(UserWarning):
    """`profile()` met ops it has no cost handle for: their MACs, if any, are missing from the totals."""


@contextmanager
def _mha_fastpath_off() -> Iterator[None]:
    """Run `nn.MultiheadAttention` and `nn.TransformerEncoderLayer` through their unfused ops (same outputs)."""
    import torch

    mha = torch.backends.mha
    enabled = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(enabled)


class _OpCounter(FlopCounterMode):
    """FlopCounterMode that also records executed ops no handle knows (neither MACs nor other ops)."""

    def __init__(self) -> None:
        super().__init__(display=False, custom_mapping=handles())
        self.uncounted: Counter[str] = Counter()

    def _count_flops(self, func_packet: Any, out: Any, args: Any, kwargs: Any) -> Any:
        if func_packet not in self.flop_registry:
            name = getattr(func_packet, "__name__", str(func_packet))
            if name.split(".")[0] not in DATA_OPS:
                self.uncounted[name] += 1
        return super()._count_flops(func_packet, out, args, kwargs)


def _split(counts: dict[Any, int], macs: frozenset[Any]) -> tuple[int, dict[str, int]]:
    """(MACs, other-op elements by group) from one module's op-keyed counts; `macs`: the MAC ops."""
    flops = sum(v for op, v in counts.items() if op in macs)
    other: defaultdict[str, int] = defaultdict(int)
    for op, v in counts.items():
        if op in OTHER_OP_NAME:
            other[OTHER_OP_NAME[op]] += v
    return flops // 2, dict(other)


def param_counts(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameters; a parameter shared by several modules counts once."""
    params = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def _fill_uncalled(model: nn.Module, modules: dict[str, ModuleCost], called: set[str]) -> None:
    """A module never called itself (a ModuleList; a model driven through another method, such as
    MixFormerV2.forward_search) was seen through its children only: give it their sum, deepest first."""
    named = dict(model.named_modules())
    for name in sorted(modules, key=lambda n: -n.count(".") if n else 1):
        if name in called:
            continue
        children = [f"{name}.{c}" if name else c for c, _ in named[name].named_children()]
        costs = [modules[c] for c in children if c in modules]
        other: Counter[str] = Counter()
        for cost in costs:
            other.update(cost.other_ops)  # update, unlike +, keeps zero counts
        modules[name].macs, modules[name].other_ops = sum(c.macs for c in costs), dict(other)


def profile(model: nn.Module, inputs: Inputs) -> Profile:
    """Count params, MACs (linear, conv, matmul, attention) and other ops of one forward of `model`."""
    import torch

    root = type(model).__name__
    counter = _OpCounter()
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), _mha_fastpath_off(), counter:
            call_model(model, inputs)
    finally:
        model.train(was_training)
    if counter.uncounted:
        ops = ", ".join(f"{name} x{n}" for name, n in counter.uncounted.items())
        warnings.warn(f"profile({root}): no cost handle for {ops}; whatever MACs they do are not in the totals",
                      UncountedOpsWarning, stacklevel=2)

    by_name: dict[str, dict[Any, int]] = {}
    for tracked, counts in counter.get_flop_counts().items():
        if tracked == root:
            by_name[""] = counts
        elif tracked.startswith(root + "."):
            by_name[tracked[len(root) + 1:]] = counts
    mac_op_set = mac_ops()  # once per profile, not per module
    modules = {}
    for name, module in model.named_modules():
        macs, other = _split(by_name.get(name, {}), mac_op_set)
        modules[name] = ModuleCost(name, type(module).__name__, param_counts(module)[0], macs, other)
    _fill_uncalled(model, modules, set(by_name))

    total_macs, total_other = _split(counter.get_flop_counts().get("Global", {}), mac_op_set)
    total, trainable = param_counts(model)
    return Profile(
        model=root,
        inputs=describe_inputs(inputs),
        params=total,
        trainable_params=trainable,
        macs=total_macs,
        other_ops=total_other,
        modules=modules,
        uncounted_ops=dict(counter.uncounted),
    )
