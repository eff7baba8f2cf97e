"""The AVX2 environment (.ci/avx2.env) really switches torch, and the native kernels, to AVX2 code paths.

Without this check a second pass under an environment that torch ignored would pass without testing anything new."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distilkit import kernels

pytestmark = pytest.mark.isa_sensitive
ENV_FILE = Path(__file__).resolve().parents[1] / ".ci" / "avx2.env"
_CAPABILITY = "import torch; print(torch.backends.cpu.get_cpu_capability())"


def avx2_env() -> dict[str, str]:
    """The variables .ci/avx2.env sets (comment lines skipped)."""
    pairs = [line.split("=", 1) for line in ENV_FILE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return {key.strip(): value.strip() for key, value in pairs}


def test_the_env_file_sets_every_library_s_isa_switch():
    assert set(avx2_env()) == {"ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "DNNL_MAX_CPU_ISA", "DISTILKIT_TEST_ISA"}


def test_torch_follows_the_avx2_environment():
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip(f"this CPU runs {torch.backends.cpu.get_cpu_capability()} code: it has no AVX2 path to switch to")
    proc = subprocess.run([sys.executable, "-c", _CAPABILITY], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **avx2_env()})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "AVX2"


@pytest.mark.skipif("DISTILKIT_TEST_ISA" not in os.environ, reason="only under a forced ISA (.ci/avx2.env)")
def test_this_run_uses_the_forced_isa():
    isa = os.environ["DISTILKIT_TEST_ISA"]
    assert torch.backends.cpu.get_cpu_capability() == isa
    if kernels.load_native():  # the native kernel builds for the capability ATen reports
        assert kernels.native_status() == f"loaded ({isa})"
