"""Attention of new tokens over cached prefix keys plus their own keys, without concatenating them.

Template-cached trackers (and any model that caches the keys/values of a fixed prefix) attend with
each new query to [prefix keys; new keys]. Written in PyTorch that is two concatenations and
`scaled_dot_product_attention`; the native CPU kernel (`load_native()`) reads the prefix and the new
keys where they lie and runs each head as two BLAS GEMMs and one in-cache softmax (faster than the
concatenation + SDPA it replaces; figures per CPU in benchmarks/RESULTS.md §3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distilkit.errors import DistilkitError
from distilkit.kernels import native

__all__ = ["prefix_attention", "qkv_prefix_attention"]

_INT_MAX = 2**31 - 1


def _native_suits(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_prefix: torch.Tensor,
                  v_prefix: torch.Tensor) -> bool:
    """Inputs the native kernel handles: float32 CPU, dense last dims, no autograd, BLAS-sized."""
    tensors = (q, k, v, k_prefix, v_prefix)
    if any(t.device.type != "cpu" or t.dtype != torch.float32 or t.stride(-1) != 1 for t in tensors):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    keys = k.shape[1] + k_prefix.shape[2]
    return q.shape[1] > 0 and keys > 0 and max(keys * q.shape[2], q.stride(1), k.stride(1), v.stride(1)) <= _INT_MAX


def _check_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_prefix: torch.Tensor,
                  v_prefix: torch.Tensor, num_heads: int) -> None:
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3 or k_prefix.dim() != 4 or v_prefix.dim() != 4:
        raise DistilkitError(f"prefix_attention: q, k, v must be (B, N, C) and the prefixes (B or 1, H, T, C/H); "
                             f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}, {tuple(k_prefix.shape)}, "
                             f"{tuple(v_prefix.shape)}")
    b, _, c = q.shape
    if num_heads <= 0 or c % num_heads:
        raise DistilkitError(f"prefix_attention: width {c} is not a multiple of num_heads={num_heads}")
    if k.shape != v.shape or k.shape[0] != b or k.shape[2] != c:
        raise DistilkitError(f"prefix_attention: k and v must be (B={b}, N, C={c}), got {tuple(k.shape)} and {tuple(v.shape)}")
    if (k_prefix.shape != v_prefix.shape or k_prefix.shape[0] not in (1, b) or k_prefix.shape[1] != num_heads
            or k_prefix.shape[3] != c // num_heads):
        raise DistilkitError(f"prefix_attention: prefixes must be (1 or {b}, {num_heads}, T, {c // num_heads}), got "
                             f"{tuple(k_prefix.shape)} and {tuple(v_prefix.shape)}")


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.view(b, n, num_heads, c // num_heads).transpose(1, 2)


def _sdpa_prefix_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_prefix: torch.Tensor,
                           v_prefix: torch.Tensor, num_heads: int) -> torch.Tensor:
    b, nq, c = q.shape
    keys = torch.cat([k_prefix.expand(b, -1, -1, -1), _heads(k, num_heads)], dim=2)
    values = torch.cat([v_prefix.expand(b, -1, -1, -1), _heads(v, num_heads)], dim=2)
    out = F.scaled_dot_product_attention(_heads(q, num_heads), keys, values)
    return out.transpose(1, 2).reshape(b, nq, c)


def _choose_native(native_kernel: bool | None, tensors: tuple[torch.Tensor, ...]) -> bool:
    """Whether to run the native op: see `native_kernel` in `prefix_attention`."""
    if native_kernel is None:
        return native.native_loaded() and _native_suits(*tensors)
    if not native_kernel:
        return False
    if not native.load_native():
        raise DistilkitError(f"prefix_attention(native_kernel=True): native kernels {native.native_status()}")
    if not _native_suits(*tensors):
        raise DistilkitError("prefix_attention(native_kernel=True) needs float32 CPU tensors with a dense last "
                             "dimension, at least one query and one key, and no autograd")
    return True


def prefix_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_prefix: torch.Tensor,
                     v_prefix: torch.Tensor, num_heads: int, *, native_kernel: bool | None = None) -> torch.Tensor:
    """softmax(q_h [k_prefix_h; k_h]ᵀ / √d) [v_prefix_h; v_h] for every head h, no mask; returns (B, Nq, C).

    q (B, Nq, C), k and v (B, N, C): token-major, any row stride; k_prefix, v_prefix (B or 1, H, T, C/H):
    the cached keys/values, a batch of 1 shared by all. native_kernel: None uses the native CPU kernel
    when `load_native()` loaded it and the inputs suit it (float32 CPU, no autograd), else PyTorch ops;
    True requires it; False never uses it. Both agree to float rounding."""
    _check_shapes(q, k, v, k_prefix, v_prefix, num_heads)
    if _choose_native(native_kernel, (q, k, v, k_prefix, v_prefix)):
        return torch.ops.distilkit.prefix_attention(q, k, v, k_prefix, v_prefix, num_heads)
    return _sdpa_prefix_attention(q, k, v, k_prefix, v_prefix, num_heads)


def qkv_prefix_attention(qkv: torch.Tensor, k_prefix: torch.Tensor, v_prefix: torch.Tensor, num_heads: int,
                         query_tail: int | None = None, *, native_kernel: bool | None = None) -> torch.Tensor:
    """`prefix_attention` on the output of one fused projection, qkv (B, N, 3C) = [q | k | v] (timm's
    layout); query_tail=k keeps only the last k queries (they still see every key): (B, k or N, C).
    Prefer it to splitting qkv yourself under torch.compile: the program passes the projection's output
    as it is, where three views would be copied apart first."""
    if qkv.dim() != 3 or qkv.shape[-1] % 3:
        raise DistilkitError(f"qkv_prefix_attention: qkv must be (B, N, 3C), got {tuple(qkv.shape)}")
    q, k, v = qkv.split(qkv.shape[-1] // 3, dim=-1)
    n = qkv.shape[1]
    if query_tail is not None:
        if not 0 < query_tail <= n:
            raise DistilkitError(f"qkv_prefix_attention: query_tail must be in 1..{n}, got {query_tail}")
        q = q[:, n - query_tail:]
    _check_shapes(q, k, v, k_prefix, v_prefix, num_heads)
    if _choose_native(native_kernel, (q, k, v, k_prefix, v_prefix)):
        return torch.ops.distilkit.qkv_prefix_attention(qkv, k_prefix, v_prefix, num_heads, query_tail or 0)
    return _sdpa_prefix_attention(q, k, v, k_prefix, v_prefix, num_heads)


_fakes_registered = False


def register_fake() -> None:
    """Output shape rules, so torch.compile can trace through the native ops (once they are loaded)."""
    global _fakes_registered
    if _fakes_registered:
        return
    _fakes_registered = True

    @torch.library.register_fake("distilkit::prefix_attention")
    def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_prefix: torch.Tensor, v_prefix: torch.Tensor,
          num_heads: int) -> torch.Tensor:
        return q.new_empty(q.shape)

    @torch.library.register_fake("distilkit::qkv_prefix_attention")
    def _(qkv: torch.Tensor, k_prefix: torch.Tensor, v_prefix: torch.Tensor, num_heads: int,
          query_tail: int) -> torch.Tensor:
        b, n, c3 = qkv.shape
        return qkv.new_empty(b, query_tail or n, c3 // 3)
