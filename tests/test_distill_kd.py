from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distilkit.distill import distribution_kd, logit_kd
from distilkit.errors import DistilkitError


def reference_kl(student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Batchmean KL for each side, averaged over sides, written out with F.kl_div."""
    per_side = [
        F.kl_div(F.log_softmax(student_logits[:, s], -1), teacher_probs[:, s], reduction="batchmean")
        for s in range(student_logits.shape[1])
    ]
    return torch.stack(per_side).mean()


def test_matches_hand_written_kl_div_reference() -> None:
    torch.manual_seed(0)
    student = torch.randn(3, 4, 10, dtype=torch.float64)
    teacher = torch.randn(3, 4, 10, dtype=torch.float64).softmax(-1)
    torch.testing.assert_close(distribution_kd(student, teacher), reference_kl(student, teacher))
    manual = (teacher * (teacher.log() - F.log_softmax(student, -1))).sum(-1).mean()
    torch.testing.assert_close(distribution_kd(student, teacher), manual)


def test_two_dim_input_is_plain_batchmean() -> None:
    student, teacher = torch.randn(5, 7), torch.randn(5, 7).softmax(-1)
    expected = F.kl_div(F.log_softmax(student, -1), teacher, reduction="batchmean")
    torch.testing.assert_close(distribution_kd(student, teacher), expected)


def test_zero_when_student_matches_teacher_and_zero_bins_are_safe() -> None:
    logits = torch.randn(2, 4, 9)
    assert distribution_kd(logits, logits.softmax(-1)).abs().item() < 1e-6
    teacher = torch.zeros(2, 4, 9)
    teacher[..., 3] = 1.0  # one-hot: 0·log 0 terms must not give NaN
    loss = distribution_kd(logits, teacher, temperature=2.0)
    assert torch.isfinite(loss)


def test_temperature_scaling_and_resharpening() -> None:
    torch.manual_seed(1)
    student = torch.randn(4, 4, 12, dtype=torch.float64)
    teacher_logits = torch.randn(4, 4, 12, dtype=torch.float64)
    t = 3.0
    expected = reference_kl(student / t, (teacher_logits / t).softmax(-1)) * t**2
    torch.testing.assert_close(
        distribution_kd(student, teacher_logits=teacher_logits, temperature=t), expected
    )
    # probabilities re-sharpened by p^(1/T) give the same as tempering the logits behind them
    torch.testing.assert_close(distribution_kd(student, teacher_logits.softmax(-1), temperature=t), expected)
    resharpened = teacher_logits.softmax(-1) ** (1 / t)
    resharpened = resharpened / resharpened.sum(-1, keepdim=True)
    torch.testing.assert_close(
        distribution_kd(student, teacher_logits.softmax(-1), temperature=t),
        reference_kl(student / t, resharpened) * t**2,
    )


def test_gradient_reaches_student_only() -> None:
    student = torch.randn(2, 4, 6, requires_grad=True)
    teacher = torch.randn(2, 4, 6, requires_grad=True)
    distribution_kd(student, teacher_logits=teacher).backward()
    assert student.grad is not None and teacher.grad is None


def test_logit_kd_is_hinton_kd() -> None:
    torch.manual_seed(2)
    s, t, temp = torch.randn(8, 5, dtype=torch.float64), torch.randn(8, 5, dtype=torch.float64), 4.0
    expected = F.kl_div(F.log_softmax(s / temp, -1), F.softmax(t / temp, -1), reduction="batchmean") * temp**2
    torch.testing.assert_close(logit_kd(s, t, temperature=temp), expected)
    assert logit_kd(t, t, temperature=temp).abs().item() < 1e-12


def test_bad_inputs_raise() -> None:
    s = torch.randn(2, 4, 6)
    with pytest.raises(DistilkitError, match="exactly one"):
        distribution_kd(s)
    with pytest.raises(DistilkitError, match="exactly one"):
        distribution_kd(s, s.softmax(-1), teacher_logits=s)
    with pytest.raises(DistilkitError, match="teacher_logits="):
        distribution_kd(s, torch.randn(2, 4, 6))
    with pytest.raises(DistilkitError, match="same shape"):
        distribution_kd(s, torch.randn(2, 4, 5).softmax(-1))
    with pytest.raises(DistilkitError, match="temperature"):
        logit_kd(s, s, temperature=0)
    with pytest.raises(DistilkitError, match="empty input \\(0, 4, 6\\)"):
        distribution_kd(s[:0], s[:0].softmax(-1))  # batchmean over nothing would be NaN
    with pytest.raises(DistilkitError, match="teacher_logits must be a floating-point tensor, got torch.int64"):
        distribution_kd(s, teacher_logits=torch.zeros(2, 4, 6, dtype=torch.long))
    assert logit_kd(s, s, temperature=np.float32(2.0)) == pytest.approx(0.0, abs=1e-6)  # numpy scalars are numbers


def test_t_squared_factor() -> None:
    torch.manual_seed(3)
    s, t = torch.randn(4, 4, 8, dtype=torch.float64), torch.randn(4, 4, 8, dtype=torch.float64)
    for temp in (0.5, 2.0, 5.0):
        untempered = distribution_kd(s / temp, teacher_logits=t / temp)
        torch.testing.assert_close(distribution_kd(s, teacher_logits=t, temperature=temp), temp**2 * untempered)
        torch.testing.assert_close(logit_kd(s, t, temperature=temp), temp**2 * logit_kd(s / temp, t / temp))
