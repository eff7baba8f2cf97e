"""Builds and loads the package's native CPU kernels (C++ sources beside this file) once per process.

The build runs at the first `load_native()` on a machine (about 10 s on 2 cores) with torch's JIT
extension builder, for the vector ISA the running CPU reports, and is cached on disk by torch (under
``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``); later processes load it in a fraction
of a second. A machine that cannot build (no C++ compiler or ninja, a torch without BLAS) keeps the
pure PyTorch paths and says why in `native_status()`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import torch

__all__ = ["load_native", "native_loaded", "native_status", "use_native"]

_SOURCE = Path(__file__).with_name("prefix_attention.cpp")
# Flags that make at::vec (and our AVX-512 exp) compile for the capability ATen itself dispatches to.
_ISA_FLAGS = {
    "AVX512": ["-DCPU_CAPABILITY_AVX512", "-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx512bw", "-mfma"],
    "AVX2": ["-DCPU_CAPABILITY_AVX2", "-mavx2", "-mfma"],
}


class _State:
    """What this process knows about the native kernels; `enabled` is the `use_native` switch."""

    loaded = False
    tried = False
    reason = "not loaded (call distilkit.kernels.load_native())"
    enabled = True


_state = _State()
_lock = threading.Lock()


def _isa() -> str:
    capability = torch.backends.cpu.get_cpu_capability()
    return capability if capability in _ISA_FLAGS else "DEFAULT"


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else 'no message'}"


def _put_pip_ninja_on_path() -> None:
    """torch's builder runs `ninja` from PATH; the pip package's binary sits in a venv's bin, which is
    not on PATH when the venv's python is run without activating it."""
    try:
        import ninja
    except ImportError:
        return
    os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])


def _build() -> str | None:
    """Build and load the extension; None on success, else why not (one line)."""
    from distilkit.compiled import NO_COMPILER, compiler_status  # also imports cpp_extension without its CUDA notice

    if compiler_status() == NO_COMPILER:  # a torch without inductor's private pieces can still build: try it
        return NO_COMPILER.removeprefix("unavailable: ")
    from torch.utils import cpp_extension

    if not cpp_extension.is_ninja_available():
        _put_pip_ninja_on_path()
        if not cpp_extension.is_ninja_available():
            return "ninja not found (pip install ninja)"
    isa = _isa()
    try:
        cpp_extension.load(
            name=f"distilkit_kernels_{isa.lower()}", sources=[str(_SOURCE)], is_python_module=False,
            extra_cflags=["-O3", "-fopenmp", *_ISA_FLAGS.get(isa, [])], extra_ldflags=["-fopenmp"], verbose=False,
        )
    except (OSError, RuntimeError, ImportError, ValueError) as err:  # compiler errors, missing sgemm_ symbol, ...
        return f"build or load failed: {_first_line(err)}"
    from distilkit.kernels.prefix_attention import register_fake

    register_fake()
    return None


def load_native() -> bool:
    """Build (first use on this machine) and load the native kernels; True when they are usable.

    Never raises for a machine that cannot build them: the answer is False and `native_status()`
    says why. Once loaded, `distilkit.kernels.prefix_attention` uses them (see `use_native`)."""
    with _lock:
        if not _state.tried:
            _state.tried = True
            reason = _build()
            _state.loaded = reason is None
            _state.reason = f"loaded ({_isa()})" if reason is None else f"unavailable: {reason}"
    return _state.loaded


def native_loaded() -> bool:
    """True when the kernels are loaded and not switched off by `use_native(False)`."""
    return _state.loaded and _state.enabled


def native_status() -> str:
    """One line: 'loaded (AVX512)', 'not loaded (...)' or 'unavailable: <reason>'."""
    return _state.reason if _state.enabled or not _state.loaded else f"{_state.reason}, switched off by use_native(False)"


@contextlib.contextmanager
def use_native(enabled: bool) -> Iterator[None]:
    """Within the block, loaded native kernels are used (True) or not (False), process-wide; for A/B
    comparisons. A compiled program holds the choice it was traced with; called under the other
    setting it is compiled again (torch.compile guards the switch)."""
    previous = _state.enabled
    _state.enabled = bool(enabled)
    try:
        yield
    finally:
        _state.enabled = previous
