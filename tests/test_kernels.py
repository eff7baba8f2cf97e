"""distilkit.kernels: the native prefix-attention kernel equals attention over the concatenated keys
(float64 reference), falls back to PyTorch where it cannot run, and is what the cached path calls."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
from torch.profiler import profile as torch_profile

from distilkit import kernels
from distilkit.errors import DistilkitError
from distilkit.kernels import native, prefix_attention, qkv_prefix_attention, use_native
from distilkit.profile import profile
from distilkit.trackers.mixformerv2 import CachedSearchStep, build_model

pytestmark = pytest.mark.isa_sensitive  # float results: rerun under .ci/avx2.env

needs_native = pytest.mark.skipif(not kernels.load_native(), reason=f"native kernels {kernels.native_status()}")


def _reference(q, k, v, kp, vp, heads):
    """Attention over [prefix; new] keys in float64, written out (no SDPA)."""
    b, nq, c = q.shape
    d = c // heads

    def split(x):
        return x.double().reshape(b, x.shape[1], heads, d).transpose(1, 2)

    keys = torch.cat([kp.double().expand(b, -1, -1, -1), split(k)], dim=2)
    values = torch.cat([vp.double().expand(b, -1, -1, -1), split(v)], dim=2)
    weights = (split(q) @ keys.transpose(-1, -2) / d**0.5).softmax(dim=-1)
    return (weights @ values).transpose(1, 2).reshape(b, nq, c)


# (batch, new tokens, query tail, prefix tokens, heads, head dim, prefix batch): vector tails of every
# kind (keys < 16, exact multiples of 16, head dims that are not vector multiples), no prefix, one key
SHAPES = [(1, 200, None, 98, 12, 64, 1), (2, 37, 5, 11, 3, 16, 1), (2, 37, None, 11, 3, 16, 2),
          (1, 5, None, 0, 2, 8, 1), (3, 1, 1, 0, 1, 5, 1), (1, 16, None, 16, 2, 7, 1), (2, 9, 4, 23, 4, 3, 2),
          (2, 600, 530, 40, 2, 16, 1)]  # more queries than one block of 256: three blocks, the last partial


@needs_native
@pytest.mark.parametrize("batch,new,tail,prefix,heads,dim,prefix_batch", SHAPES)
def test_native_and_fallback_equal_the_float64_reference(batch, new, tail, prefix, heads, dim, prefix_batch):
    torch.manual_seed(0)
    c = heads * dim
    qkv = torch.randn(batch, new, 3 * c) * 2
    kp, vp = torch.randn(prefix_batch, heads, prefix, dim) * 2, torch.randn(prefix_batch, heads, prefix, dim)
    q, k, v = qkv.split(c, dim=-1)
    q_used = q if tail is None else q[:, new - tail:]
    ref = _reference(q_used, k, v, kp, vp, heads)
    for native_kernel in (True, False):
        fused = qkv_prefix_attention(qkv, kp, vp, heads, tail, native_kernel=native_kernel)
        split = prefix_attention(q_used, k, v, kp, vp, heads, native_kernel=native_kernel)
        for out in (fused, split):
            assert out.shape == ref.shape and out.is_contiguous()
            # float32 rounding of scores ~5 in size: SDPA itself is ~1e-5 from the float64 result here
            assert (out.double() - ref).abs().max() < 3e-5, native_kernel


@needs_native
def test_large_scores_stay_finite_and_exact():
    """Scores in the thousands: the softmax must subtract each row's maximum (exp would overflow)."""
    torch.manual_seed(1)
    qkv, kp, vp = torch.randn(1, 40, 96) * 30, torch.randn(1, 2, 30, 16) * 30, torch.randn(1, 2, 30, 16)
    q, k, v = qkv.split(32, dim=-1)
    ref = _reference(q, k, v, kp, vp, 2)
    out = qkv_prefix_attention(qkv, kp, vp, 2, native_kernel=True)
    sdpa = qkv_prefix_attention(qkv, kp, vp, 2, native_kernel=False)
    assert torch.isfinite(out).all()
    # float32 scores of that size carry ~1e-4 absolute rounding: as close to float64 as SDPA gets
    assert (out.double() - ref).abs().max() <= 2 * (sdpa.double() - ref).abs().max() + 1e-5


@needs_native
def test_unsuitable_inputs_fall_back_and_forced_native_refuses_them():
    torch.manual_seed(2)
    qkv = torch.randn(1, 6, 24, dtype=torch.float64, requires_grad=True)
    kp, vp = torch.randn(1, 2, 3, 4, dtype=torch.float64), torch.randn(1, 2, 3, 4, dtype=torch.float64)
    out = qkv_prefix_attention(qkv, kp, vp, 2)  # float64 with autograd: the PyTorch path, differentiable
    out.sum().backward()
    assert qkv.grad is not None and torch.isfinite(qkv.grad).all()
    with pytest.raises(DistilkitError, match="float32 CPU"):
        qkv_prefix_attention(qkv, kp, vp, 2, native_kernel=True)
    grad_qkv = torch.randn(1, 6, 24, requires_grad=True)
    with pytest.raises(DistilkitError, match="no autograd"):
        qkv_prefix_attention(grad_qkv, kp.float(), vp.float(), 2, native_kernel=True)


@pytest.mark.parametrize("args,message", [
    ((torch.randn(1, 4, 10), torch.randn(1, 2, 3, 5), torch.randn(1, 2, 3, 5), 2), "qkv must be"),
    ((torch.randn(1, 4, 18), torch.randn(1, 3, 3, 3), torch.randn(1, 3, 3, 3), 3), "prefixes must be"),
    ((torch.randn(1, 4, 18), torch.randn(2, 3, 3, 2), torch.randn(2, 3, 3, 2), 3), "prefixes must be"),
    ((torch.randn(1, 4, 18), torch.randn(1, 3, 3, 2), torch.randn(1, 3, 4, 2), 3), "prefixes must be"),
    ((torch.randn(1, 4, 18), torch.randn(1, 4, 3, 2), torch.randn(1, 4, 3, 2), 4), "multiple of num_heads"),
])
def test_bad_shapes_are_clear_errors(args, message):
    with pytest.raises(DistilkitError, match=message):
        qkv_prefix_attention(*args)


def test_query_tail_out_of_range_is_a_clear_error():
    with pytest.raises(DistilkitError, match="query_tail must be in 1..4"):
        qkv_prefix_attention(torch.randn(1, 4, 12), torch.randn(1, 3, 3, 4), torch.randn(1, 3, 3, 4), 3, 5)


def _tiny_tracker_model(seed: int):
    """mixformerv2-s-tiny in eval mode with a template and a search image of its sizes."""
    torch.manual_seed(seed)
    model = build_model("mixformerv2-s-tiny").eval()
    cfg = model.config
    template = torch.randn(1, 3, cfg.template_size, cfg.template_size)
    return model, template, torch.randn(1, 3, cfg.search_size, cfg.search_size)


def _ops_run(fn) -> set[str]:
    with torch_profile() as prof:
        fn()
    return {event.name for event in prof.events()}


@needs_native
def test_cached_path_calls_the_native_op_only_when_switched_on_and_counts_the_same_macs():
    model, template, search = _tiny_tracker_model(3)
    with torch.inference_mode():
        model.set_templates(template, template)
        with use_native(False):
            assert not kernels.native_loaded() and "switched off" in kernels.native_status()
            off = model.forward_search(search)
            assert "distilkit::qkv_prefix_attention" not in _ops_run(lambda: model.forward_search(search))
        assert kernels.native_loaded() and kernels.native_status().startswith("loaded")
        on = model.forward_search(search)
        assert "distilkit::qkv_prefix_attention" in _ops_run(lambda: model.forward_search(search))
        full = model(template, template, search)
    for key in ("boxes", "side_logits", "score"):
        assert torch.allclose(on[key], off[key], atol=1e-5) and torch.allclose(on[key], full[key], atol=1e-5)

    def cached_macs() -> int:
        return profile(CachedSearchStep(model, template, template), {"search": search}).macs

    with use_native(False):
        sdpa_macs = cached_macs()
    assert cached_macs() == sdpa_macs > 0


def test_a_machine_that_cannot_build_keeps_the_pytorch_path(monkeypatch):
    monkeypatch.setattr(native, "_state", native._State())
    monkeypatch.setattr("distilkit.compiled.compiler_status", lambda: "unavailable: no C++ compiler found (install g++ or set "
                                                                      "CXX)")
    assert kernels.load_native() is False
    assert kernels.native_status() == "unavailable: no C++ compiler found (install g++ or set CXX)"
    assert not kernels.native_loaded()
    qkv, kp, vp = torch.randn(1, 4, 36), torch.randn(1, 3, 2, 4), torch.randn(1, 3, 2, 4)
    q, k, v = qkv.split(12, dim=-1)
    assert (qkv_prefix_attention(qkv, kp, vp, 3).double() - _reference(q, k, v, kp, vp, 3)).abs().max() < 1e-6
    with pytest.raises(DistilkitError, match="no C\\+\\+ compiler"):
        qkv_prefix_attention(qkv, kp, vp, 3, native_kernel=True)


def test_a_failing_build_is_reported_in_one_line(monkeypatch, tmp_path):
    broken = tmp_path / "broken.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(native, "_state", native._State())
    monkeypatch.setattr(native, "_SOURCE", broken)
    monkeypatch.setattr(native, "_isa", lambda: "BROKEN")  # its own extension name: the real one's version stays
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "build"))
    assert kernels.load_native() is False
    status = kernels.native_status()
    assert status.startswith("unavailable: build or load failed: ") and "\n" not in status


@needs_native
def test_loading_in_a_fresh_process_prints_nothing():
    """No build chatter, no 'No CUDA runtime is found' notice from torch's extension builder."""
    code = "from distilkit import kernels\nprint(kernels.load_native(), kernels.native_status())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.startswith("True loaded"), proc.stderr[-2000:]
    assert proc.stderr == ""


@needs_native
def test_pip_ninja_is_found_without_an_activated_venv(monkeypatch, tmp_path):
    """The build needs `ninja` on PATH; the pip package's copy is put there when PATH lacks one."""
    import ninja

    for tool in ("c++", "g++", "gcc", "cc", "as", "ld"):  # a PATH with the toolchain but no ninja
        if shutil.which(tool):
            (tmp_path / tool).symlink_to(shutil.which(tool))
    monkeypatch.setattr(native, "_state", native._State())
    monkeypatch.setenv("PATH", str(tmp_path))
    assert kernels.load_native(), kernels.native_status()
    assert os.environ["PATH"].split(os.pathsep)[0] == ninja.BIN_DIR


@needs_native
def test_a_compiled_program_follows_the_switch():
    """The program traced with the native op is not reused under use_native(False), nor the reverse."""
    from distilkit.compiled import compiler_available

    if not compiler_available():
        pytest.skip("no C++ compiler for TorchInductor")
    model, template, search = _tiny_tracker_model(4)
    with torch.inference_mode():
        model.set_templates(template, template)
        eager = model.forward_search(search)["boxes"]
        model.compile_search()
        assert "distilkit::qkv_prefix_attention" in _ops_run(lambda: model.forward_search(search))
        with use_native(False):
            assert "distilkit::qkv_prefix_attention" not in _ops_run(lambda: model.forward_search(search))
            assert torch.allclose(model.forward_search(search)["boxes"], eager, atol=1e-5)
        assert "distilkit::qkv_prefix_attention" in _ops_run(lambda: model.forward_search(search))
        assert torch.allclose(model.forward_search(search)["boxes"], eager, atol=1e-5)


_OTHER_ISA = """
import sys, torch
torch.backends.cpu.get_cpu_capability = lambda: sys.argv[1]  # build the variant another CPU would get
from distilkit import kernels
from distilkit.kernels import qkv_prefix_attention
assert kernels.load_native(), kernels.native_status()
torch.manual_seed(0)
qkv, kp, vp = torch.randn(2, 37, 3 * 48) * 2, torch.randn(1, 3, 23, 16) * 2, torch.randn(1, 3, 23, 16)
for tail in (None, 5):
    native = qkv_prefix_attention(qkv, kp, vp, 3, tail, native_kernel=True)
    sdpa = qkv_prefix_attention(qkv, kp, vp, 3, tail, native_kernel=False)
    assert (native - sdpa).abs().max() < 1e-5, (native - sdpa).abs().max()
print(kernels.native_status())
"""


@needs_native
@pytest.mark.parametrize("isa", ["AVX2", "DEFAULT"])
def test_the_builds_for_other_cpus_give_the_same_results(isa):
    """The at::vec code paths of CPUs without AVX-512 (run here, on a CPU that has it)."""
    proc = subprocess.run([sys.executable, "-c", _OTHER_ISA, isa], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == f"loaded ({isa})"
