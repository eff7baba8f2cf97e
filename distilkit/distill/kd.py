"""Knowledge-distillation losses on distributions: KL(teacher ‖ student), Hinton-style temperature.

Both losses treat the last dimension as the class/bin axis and every leading dimension as
independent distributions: the KL of each distribution is summed over bins and averaged over all
leading positions. For (B, K) this is `F.kl_div(..., reduction="batchmean")`; for (B, 4, K) it is
the batchmean KL of each side averaged over the 4 sides. The teacher side is always detached.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distilkit.distill._checks import check_probabilities, check_temperature
from distilkit.errors import DistilkitError


def _kl_mean(student_log_probs: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Σ_bins p_t·(log p_t − log p_s), averaged over all leading positions (0·log 0 counts as 0)."""
    bins = student_log_probs.shape[-1]
    return F.kl_div(
        student_log_probs.reshape(-1, bins), teacher_probs.reshape(-1, bins), reduction="batchmean"
    )


def _check_pair(fn: str, student: torch.Tensor, teacher: torch.Tensor, teacher_name: str) -> None:
    for name, t in (("student_logits", student), (teacher_name, teacher)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            kind = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
            raise DistilkitError(f"{fn}: {name} must be a floating-point tensor, got {kind}")
    if student.dim() < 1 or student.shape != teacher.shape:
        raise DistilkitError(
            f"{fn}: student_logits {tuple(student.shape)} and {teacher_name} {tuple(teacher.shape)} "
            "must have the same shape"
        )
    if student.numel() == 0:  # batchmean over no distributions is 0/0
        raise DistilkitError(f"{fn}: empty input {tuple(student.shape)}: there is no distribution to compare")


def logit_kd(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Hinton KD: T²·KL(softmax(t/T) ‖ softmax(s/T)) over the last dim, averaged over leading dims."""
    check_temperature(temperature)
    _check_pair("logit_kd", student_logits, teacher_logits, "teacher_logits")
    student_log_probs = F.log_softmax(student_logits / temperature, dim=-1)
    teacher_probs = F.softmax(teacher_logits.detach() / temperature, dim=-1)
    return _kl_mean(student_log_probs, teacher_probs) * temperature**2


def distribution_kd(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor | None = None,
    temperature: float = 1.0,
    *,
    teacher_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL(teacher ‖ student) on (B, 4, K) side distributions or (B, K): batchmean per side, mean of sides.

    Give the teacher as probabilities (`teacher_probs`, e.g. from `corner_to_sides`) or as logits
    (`teacher_logits=`), exactly one. With T ≠ 1 the student is softened as softmax(s/T) and the
    teacher probabilities are re-sharpened as p^(1/T) / Σ p^(1/T), which is softmax(log p / T) —
    the same as tempering logits whose softmax is p; the result is multiplied by T².
    """
    check_temperature(temperature)
    if (teacher_probs is None) == (teacher_logits is None):
        raise DistilkitError("distribution_kd: pass exactly one of teacher_probs or teacher_logits=")
    if teacher_logits is not None:
        _check_pair("distribution_kd", student_logits, teacher_logits, "teacher_logits")
        return logit_kd(student_logits, teacher_logits, temperature)
    _check_pair("distribution_kd", student_logits, teacher_probs, "teacher_probs")
    check_probabilities(
        teacher_probs, -1, "distribution_kd: teacher_probs", "pass teacher_logits= for unnormalised scores"
    )
    target = teacher_probs.detach().clamp_min(0)
    if temperature != 1:
        target = F.softmax(target.log() / temperature, dim=-1)
    student_log_probs = F.log_softmax(student_logits / temperature, dim=-1)
    return _kl_mean(student_log_probs, target) * temperature**2
