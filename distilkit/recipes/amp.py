"""Mixed precision for training stages: CUDA autocast in bf16 or fp16 (with loss scaling), never on CPU.

On a CPU, autocast is no saving (bf16 matmuls are hundreds of times slower than fp32 on CPUs without
AMX/AVX512-BF16), so a budget asking for it on a CPU run is refused rather than silently slowed down.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Optional

import torch
from torch import nn

from distilkit.errors import DistilkitError

AMP_MODES = ("none", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_amp(amp: str, device: str) -> None:
    """Refuse an `amp` mode the device cannot run (any mode but none needs CUDA; bf16 needs a GPU that has it)."""
    if amp not in AMP_MODES:
        raise DistilkitError(f"unknown amp mode {amp!r}; expected one of {', '.join(AMP_MODES)}")
    if amp == "none":
        return
    if not str(device).startswith("cuda"):
        raise DistilkitError(f"amp: {amp} runs on CUDA devices only, and this run is on {device} (autocast on a CPU "
                             "is slower than fp32): set amp: none in the budget, or train on a GPU")
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        raise DistilkitError("amp: bf16 needs a GPU with bfloat16 support (Ampere or newer); use amp: fp16")


class MixedPrecision:
    """Autocast for the forward pass and, for fp16, a GradScaler around backward/clip/step; its state goes
    into checkpoints so a resumed fp16 stage keeps its loss scale."""

    def __init__(self, amp: str, device: str) -> None:
        check_amp(amp, device)
        self.amp = amp
        self.scaler: Optional[torch.amp.GradScaler] = torch.amp.GradScaler("cuda") if amp == "fp16" else None

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """The forward pass (student, teacher, loss) in the reduced precision; a no-op for amp: none."""
        if self.amp == "none":
            yield
            return
        with torch.autocast("cuda", dtype=_DTYPES[self.amp]):
            yield

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, params: list[nn.Parameter], clip: float) -> None:
        """backward, optional gradient-norm clipping (on unscaled gradients) and the optimizer step."""
        if self.scaler is None:
            loss.backward()
            if clip > 0:
                nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        if clip > 0:
            self.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(params, clip)
        self.scaler.step(optimizer)  # skipped when the scaled gradients overflowed; the scale then shrinks
        self.scaler.update()

    def state_dict(self) -> Optional[dict[str, Any]]:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: Optional[dict[str, Any]]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


__all__ = ["AMP_MODES", "MixedPrecision", "check_amp"]
