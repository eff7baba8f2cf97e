"""Attention distillation: supervise where query tokens look with target distributions over keys.

Token heads (DETR-style queries, MixFormerV2's prediction tokens) start with near-uniform attention
and learn to look at the object slowly. Giving each query a target distribution over the keys (e.g. a
dense teacher's heatmap) turns that search into a dense, per-key signal.
"""

from __future__ import annotations

import torch

from distilkit.distill._checks import check_probabilities
from distilkit.errors import DistilkitError


def attention_kd(student_log_attention: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KL(target ‖ attention) over the last dim, averaged over every leading position and broadcast dims.

    `student_log_attention` (…, K): log-attention of the queries over K keys; it may be the slice of a
    softmax over more keys (then it sums to < 1 and the missing mass counts as error). `target` (…, K):
    probabilities, broadcastable to the student's shape (e.g. (B, 1, Q, K) against (B, heads, Q, K)).
    0 exactly when the attention equals the target on these keys and puts no mass elsewhere.
    """
    if student_log_attention.dim() < 1 or target.shape[-1] != student_log_attention.shape[-1]:
        raise DistilkitError(
            f"attention_kd: attention {tuple(student_log_attention.shape)} and target {tuple(target.shape)} "
            "must have the same number of keys (last dim)"
        )
    try:
        target = target.detach().expand_as(student_log_attention)
    except RuntimeError:
        raise DistilkitError(
            f"attention_kd: target {tuple(target.shape)} does not broadcast to the attention "
            f"{tuple(student_log_attention.shape)}"
        ) from None
    check_probabilities(target, -1, "attention_kd: target", "targets are distributions over the keys")
    target = target.clamp_min(0)
    kl = torch.xlogy(target, target) - target * student_log_attention
    return kl.sum(dim=-1).mean()
