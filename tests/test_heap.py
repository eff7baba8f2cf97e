"""distilkit.heap.retain_freed_memory: an inference-like loop stops page-faulting its buffers in again."""

import platform
import subprocess
import sys

import pytest

from distilkit.errors import DistilkitError
from distilkit.heap import retain_freed_memory

# Buffers the size of a MixFormerV2-S block's activations, freed and reallocated every "frame". Both
# runs start from glibc's static defaults (128 KiB mmap and trim thresholds, set explicitly, which also
# stops glibc adapting them), so that without the change each buffer is mapped and faulted in again
# every frame on any glibc; how far glibc's own adaptation gets depends on the process's history.
_LOOP = """
import ctypes, resource, sys, torch
from distilkit.heap import retain_freed_memory
mallopt = ctypes.CDLL(None).mallopt
mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
applied = retain_freed_memory() if sys.argv[1] == "retain" else None
def frame():
    x = torch.ones(200 * 768)
    for _ in range(4):
        qkv = torch.ones(200 * 2304)
        a = torch.ones(200 * 768)
        del qkv
        h = torch.ones(200 * 768)
        x = torch.ones(200 * 768) + h + a
for _ in range(5):
    frame()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    frame()
print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def _faults_per_frame(mode: str) -> tuple[str, float]:
    done = subprocess.run([sys.executable, "-c", _LOOP, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    applied, faults = done.stdout.split()
    return applied, float(faults)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_buffers_are_reused_without_page_faults():
    _, default = _faults_per_frame("default")
    assert default > 100, f"the loop should fault its buffers in every frame without the change ({default:.0f})"
    # The kernel may fault a few pages in for reasons of its own (memory compaction, transparent huge pages while
    # other processes run): the best of three runs is the loop's own figure (a CI run once saw 30 in one of them).
    runs = []
    for _ in range(3):
        applied, retained = _faults_per_frame("retain")
        assert applied == "True"
        runs.append(retained)
        if retained < 5:
            break
    assert min(runs) < 5, f"freed buffers were faulted in again in every run: {runs} faults per frame"


def test_other_c_libraries_keep_their_policy_and_bad_values_are_refused(monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda *a, **k: ("", ""))
    assert retain_freed_memory() is False
    with pytest.raises(DistilkitError, match="mmap_threshold must be at most"):
        retain_freed_memory(mmap_threshold=64 << 20)
    with pytest.raises(DistilkitError, match="trim_threshold must be >= 0"):
        retain_freed_memory(trim_threshold=-1)


def test_only_commands_that_track_frames_change_the_process_heap(monkeypatch, tmp_path):
    """The glibc setting is process-wide: `distilkit recipes` leaves malloc alone, `distilkit eval` applies it."""
    import types

    import distilkit.heap
    from cli_exit import cli_exit_code

    calls = []
    fake_platform = types.SimpleNamespace(system=lambda: calls.append("applied") or "Darwin")  # seen by every caller
    monkeypatch.setattr(distilkit.heap, "platform", fake_platform)
    assert cli_exit_code(["recipes"]) == 0 and calls == []
    assert cli_exit_code(["eval", "constant", "--data", "synthetic:1", "--no-progress", "--out", str(tmp_path / "e")]) == 0
    assert calls == ["applied"]
