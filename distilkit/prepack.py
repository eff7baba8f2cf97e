"""Prepacked-weight linear layers for fast CPU inference (oneDNN), for any model.

`prepack_linears(model)` switches every `nn.Linear` to oneDNN's linear kernel with its weight reordered
once into the blocked layout that kernel wants; per call this saves the repacking the default GEMM
does (up to a quarter of a linear's time at tracking batch sizes here; ~10 % of a MixFormerV2-S frame). Outputs equal
`F.linear` to float rounding. The fast kernel is used only where it is valid (CPU, fp32, no autograd
recording, no dispatch mode such as the FLOPs counter active); everywhere else the layer is a plain
`nn.Linear`. Weights changed in place (an optimizer step, `load_state_dict`) are repacked on the next
call, so a prepacked model stays correct; `unpack_linears` restores the plain class. The kernel, the
reorder and the dispatch-mode check are private torch APIs: `prepack_status()` says which one a torch lacks,
and the trackers then run plain eager layers.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from distilkit.fingerprint import tensor_version

__all__ = ["PrepackedLinear", "prepack_available", "prepack_linears", "prepack_status", "prepacked_view", "shared_view",
           "unpack_linears"]


def prepack_status() -> str:
    """One line: 'available', or 'unavailable: <reason>' when this torch build has no oneDNN or lacks one of
    the private APIs used here (oneDNN's linear kernel and weight reorder, the dispatch-mode stack check)."""
    if not torch.backends.mkldnn.is_available():
        return "unavailable: this torch build has no oneDNN (torch.backends.mkldnn)"
    missing = [f"torch.ops.mkldnn.{op}" for op in ("_linear_pointwise", "_reorder_linear_weight")
               if not hasattr(torch.ops.mkldnn, op)]
    missing += [] if hasattr(torch._C, "_len_torch_dispatch_stack") else ["torch._C._len_torch_dispatch_stack"]
    if missing:
        return f"unavailable: this torch lacks {', '.join(missing)} (private oneDNN / dispatch API)"
    return "available"


def prepack_available() -> bool:
    """True when this torch build has everything prepacking uses (see `prepack_status` for why not)."""
    return prepack_status() == "available"


class PrepackedLinear(nn.Linear):
    """An `nn.Linear` (same parameters, state-dict keys and hooks) computed with a prepacked weight."""

    #: what `distilkit.io` saves and rebuilds this module as (the packed copy is a runtime cache only)
    saved_as = nn.Linear

    batch_hint: int
    _packed: torch.Tensor | None
    _packed_key: tuple[int, int] | None

    def _fresh_packed(self) -> torch.Tensor:
        key = (self.weight.data_ptr(), tensor_version(self.weight))
        if self._packed is None or self._packed_key != key:
            with torch.no_grad():
                self._packed = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), self.batch_hint)
            self._packed_key = key
        return self._packed

    def _fast_path_ok(self, x: torch.Tensor) -> bool:
        if x.device.type != "cpu" or x.dtype != torch.float32 or self.weight.dtype != torch.float32:
            return False
        if self.weight.device.type != "cpu" or x.dim() < 2:
            return False
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad
                                        or (self.bias is not None and self.bias.requires_grad)):
            return False
        return torch._C._len_torch_dispatch_stack() == 0

    def __getstate__(self) -> dict:
        """Copies and pickles carry the weights only; the opaque packed tensor is rebuilt on first use."""
        state = super().__getstate__()
        state["_packed"], state["_packed_key"] = None, None
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._fast_path_ok(x):
            return F.linear(x, self.weight, self.bias)
        flat = x.reshape(-1, x.shape[-1])
        out = torch.ops.mkldnn._linear_pointwise(flat, self._fresh_packed(), self.bias, "none", [], "")
        return out.view(*x.shape[:-1], out.shape[-1])


def prepack_linears(model: nn.Module, batch_hint: int = 256) -> int:
    """Turn every `nn.Linear` in `model` into a `PrepackedLinear` (in place); returns how many changed.

    `batch_hint` is the typical number of rows (tokens × batch) per call, used to pick the weight layout.
    A torch without what it needs (`prepack_status`) raises RuntimeError instead of silently running the slow path.
    """
    status = prepack_status()
    if status != "available":
        raise RuntimeError(f"prepack_linears: {status}")
    count = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = PrepackedLinear
            module.batch_hint, module._packed, module._packed_key = int(batch_hint), None, None
            count += 1
    return count


def shared_view(model: nn.Module) -> nn.Module:
    """A copy of `model`'s modules that shares its parameters and buffers (no extra weight memory), to
    change how a model runs without touching the caller's instance; in-place weight changes show through."""
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, shared)


def prepacked_view(model: nn.Module, batch_hint: int = 256) -> nn.Module:
    """A prepacked `shared_view` of `model`: `model` itself is left untouched, and in-place weight changes
    to it show through (and are repacked)."""
    view = shared_view(model)
    prepack_linears(view, batch_hint)
    return view


def unpack_linears(model: nn.Module) -> int:
    """Undo `prepack_linears`: back to plain `nn.Linear`, packed copies freed; returns how many changed."""
    count = 0
    for module in model.modules():
        if type(module) is PrepackedLinear:
            module.__class__ = nn.Linear
            for attr in ("batch_hint", "_packed", "_packed_key"):
                module.__dict__.pop(attr, None)
            count += 1
    return count
