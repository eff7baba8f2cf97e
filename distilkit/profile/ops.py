"""Op handles for torch's `FlopCounterMode`: which aten ops are MACs, which are "other ops".

MAC ops (matmuls, convolutions, attention) keep torch's FLOP convention inside the counter
(2 per multiply-accumulate) so torch's own formulas for mm/bmm/conv can be reused unchanged;
`profile()` divides by two. Other ops (norms, softmax, activations, resampling, pooling,
elementwise arithmetic) count output elements and never enter the MAC total.

Attention is counted by the (query, key) pairs actually computed: QKᵀ costs pairs·E MACs and
AV costs pairs·Ev MACs per batch·head. Without a mask pairs = L·S; with a boolean mask only True
entries count; with a float (additive) mask only entries that are not -inf count; with
``is_causal`` only the lower triangle counts. A model written as two SDPA calls (asymmetric
attention) and the same model written as one call with a boolean mask therefore count the same.
"""

from __future__ import annotations

from math import prod
from typing import Any, Callable

import torch

aten = torch.ops.aten

# Torch's own formulas (2 FLOPs per MAC) that we rely on for dense products and convolutions.
_TORCH_MAC_OPS = (aten.mm, aten.addmm, aten.bmm, aten.baddbmm, aten.convolution, aten._convolution)


def _raw(fn: Callable[..., int]) -> Callable[..., int]:
    """Mark a handle as wanting real tensors (not shapes) from FlopCounterMode."""
    fn._get_raw = True  # type: ignore[attr-defined]
    return fn


def _vector_flops(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
    """mv / dot / addmv: one MAC per element of the matrix (or vector) operand."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    return 2 * max(t.numel() for t in tensors)


def attention_pairs(q_len: int, k_len: int, mask: torch.Tensor | None, is_causal: bool, batch_shape: tuple[int, ...]) -> int:
    """Number of (query, key) pairs computed over all batch/head entries, as documented above."""
    if is_causal:
        per_head = sum(min(i + 1, k_len) for i in range(q_len))
        return per_head * prod(batch_shape)
    if mask is None:
        return q_len * k_len * prod(batch_shape)
    allowed = mask if mask.dtype == torch.bool else mask != float("-inf")
    full = torch.broadcast_shapes(allowed.shape, (*batch_shape, q_len, k_len))
    return int(allowed.expand(full).sum())


def _sdpa_flops(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, is_causal: bool) -> int:
    pairs = attention_pairs(q.shape[-2], k.shape[-2], mask, bool(is_causal), tuple(q.shape[:-2]))
    return 2 * pairs * (q.shape[-1] + v.shape[-1])


@_raw
def _sdpa_cpu_flash(q, k, v, dropout_p=0.0, is_causal=False, *, attn_mask=None, out_val=None, **_):  # type: ignore[no-untyped-def]
    return _sdpa_flops(q, k, v, attn_mask, is_causal)


@_raw
def _sdpa_with_bias(q, k, v, attn_bias=None, compute_log_sumexp=False, dropout_p=0.0, is_causal=False, *_, out_val=None, **__):  # type: ignore[no-untyped-def]
    return _sdpa_flops(q, k, v, attn_bias, is_causal)


@_raw
def _sdpa_flash(q, k, v, dropout_p=0.0, is_causal=False, *_, out_val=None, **__):  # type: ignore[no-untyped-def]
    return _sdpa_flops(q, k, v, None, is_causal)


@_raw
def _sdpa_top(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, *_, out_val=None, **__):  # type: ignore[no-untyped-def]
    return _sdpa_flops(q, k, v, attn_mask, is_causal)


MAC_HANDLES: dict[Any, Callable[..., int]] = {
    aten.scaled_dot_product_attention: _sdpa_top,
    aten.mv: _raw(_vector_flops),
    aten.addmv: _raw(_vector_flops),
    aten.dot: _raw(_vector_flops),
    aten.vdot: _raw(_vector_flops),
    aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flash,
    aten._scaled_dot_product_attention_math: _sdpa_top,
    aten._scaled_dot_product_efficient_attention: _sdpa_with_bias,
    aten._scaled_dot_product_cudnn_attention: _sdpa_with_bias,
    aten._scaled_dot_product_flash_attention: _sdpa_flash,
}

# Every op whose count is MACs (x2 inside the counter): torch's formulas plus ours.
MAC_OPS = frozenset((*_TORCH_MAC_OPS, *MAC_HANDLES))


@_raw
def _prefix_attention(q, k, v, k_prefix, v_prefix, num_heads, *_, out_val=None, **__):  # type: ignore[no-untyped-def]
    """distilkit.kernels.prefix_attention: every query with every prefix and new key, per head."""
    b, nq, c = q.shape
    return 2 * b * num_heads * nq * (k_prefix.shape[2] + k.shape[1]) * 2 * (c // num_heads)


@_raw
def _qkv_prefix_attention(qkv, k_prefix, v_prefix, num_heads, query_tail, *_, out_val=None, **__):  # type: ignore[no-untyped-def]
    b, n, c3 = qkv.shape
    return 2 * b * num_heads * (query_tail or n) * (k_prefix.shape[2] + n) * 2 * (c3 // 3 // num_heads)


def native_mac_handles() -> dict[Any, Callable[..., int]]:
    """Handles for distilkit's native ops (`distilkit.kernels`) that are loaded in this process."""
    namespace = torch.ops.distilkit
    found = {}
    for name, handle in (("prefix_attention", _prefix_attention), ("qkv_prefix_attention", _qkv_prefix_attention)):
        packet = getattr(namespace, name, None)
        if packet is not None:
            found[packet] = handle
    return found


def mac_ops() -> frozenset[Any]:
    """Ops whose count is MACs (x2): `MAC_OPS` plus the native ones loaded in this process."""
    return MAC_OPS | native_mac_handles().keys()


# Other ops, by the name they are reported under; each counts the elements of its output.
OTHER_OP_GROUPS: dict[str, tuple[str, ...]] = {
    "layer_norm": ("native_layer_norm", "layer_norm"),
    "batch_norm": ("native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training", "batch_norm"),
    "group_norm": ("native_group_norm", "group_norm"),
    "rms_norm": ("_fused_rms_norm", "rms_norm"),
    "softmax": ("_softmax", "softmax", "_safe_softmax", "_log_softmax", "log_softmax"),
    "gelu": ("gelu", "gelu_"),
    "relu": ("relu", "relu_", "threshold"),
    "silu": ("silu", "silu_"),
    "sigmoid": ("sigmoid", "sigmoid_"),
    "tanh": ("tanh", "tanh_"),
    "hardswish": ("hardswish", "hardswish_"),
    "hardsigmoid": ("hardsigmoid", "hardsigmoid_"),
    "leaky_relu": ("leaky_relu", "leaky_relu_"),
    "elu": ("elu", "elu_"),
    "interpolate": ("upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "upsample_linear1d",
                    "upsample_bilinear2d", "upsample_bicubic2d", "upsample_trilinear3d", "_upsample_nearest_exact2d",
                    "_upsample_bilinear2d_aa", "_upsample_bicubic2d_aa", "grid_sampler_2d"),
    "pool": ("avg_pool2d", "max_pool2d_with_indices", "adaptive_avg_pool2d", "_adaptive_avg_pool2d",
             "adaptive_max_pool2d", "avg_pool1d", "max_pool1d"),
    "reduce": ("sum", "mean", "amax", "amin", "logsumexp", "var", "std"),
    "add": ("add", "add_"), "sub": ("sub", "sub_", "rsub"), "mul": ("mul", "mul_"), "div": ("div", "div_"),
    "pow": ("pow", "pow_"), "exp": ("exp", "exp_"), "log": ("log", "log_"), "sqrt": ("sqrt", "rsqrt"),
    "neg": ("neg",), "abs": ("abs",), "clamp": ("clamp", "clamp_", "clamp_min", "clamp_max"),
    "min_max": ("maximum", "minimum"), "cumsum": ("cumsum",), "erf": ("erf",),
}


def _out_elements(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
    out = out_val[0] if isinstance(out_val, (tuple, list)) else out_val
    return out.numel() if isinstance(out, torch.Tensor) else 0


OTHER_HANDLES: dict[Any, Callable[..., int]] = {}
OTHER_OP_NAME: dict[Any, str] = {}
for _group, _names in OTHER_OP_GROUPS.items():
    for _name in _names:
        _packet = getattr(aten, _name, None)
        if isinstance(_packet, type(aten.add)):  # an op packet (torch._ops.OpOverloadPacket, a private name)
            OTHER_HANDLES[_packet] = _raw(_out_elements)
            OTHER_OP_NAME[_packet] = _group

# Ops that move or create data without arithmetic; anything else that is unhandled is reported.
DATA_OPS = frozenset(
    "view _unsafe_view reshape permute transpose t expand clone copy_ copy cat stack slice select split "
    "split_with_sizes unbind contiguous detach detach_ alias empty empty_like empty_strided zeros zeros_like "
    "ones ones_like full full_like fill_ zero_ arange unsqueeze squeeze flatten unflatten index_select "
    "index gather scatter lift_fresh lift_fresh_copy _to_copy to as_strided new_empty new_zeros new_ones "
    "new_full scalar_tensor where masked_fill masked_fill_ repeat roll flip constant_pad_nd pad chunk "
    "narrow diagonal tril triu eq ne lt le gt ge logical_and logical_or logical_not bitwise_and bitwise_or "
    "bitwise_not argmax argmin topk sort max min floor ceil round sign linspace randn rand randint normal_ "
    "uniform_ bernoulli_ dropout native_dropout _local_scalar_dense item isnan isinf isfinite any all "
    "nonzero meshgrid stride unfold col2im im2col im2col_backward pixel_shuffle pixel_unshuffle".split()
)


def handles() -> dict[Any, Callable[..., int]]:
    """The custom_mapping passed to FlopCounterMode: our handles (torch's registry supplies the rest).

    Each op is registered by packet (how counts are keyed) and by every overload: FlopCounterMode
    decomposes composite ops whose overload it does not know, so this keeps attention (with its
    original boolean mask), layer_norm or interpolate from being split into smaller ops."""
    mapping: dict[Any, Callable[..., int]] = {}
    for packet, handle in {**OTHER_HANDLES, **MAC_HANDLES, **native_mac_handles()}.items():
        mapping[packet] = handle
        for overload in packet.overloads():
            mapping[getattr(packet, overload)] = handle
    return mapping
