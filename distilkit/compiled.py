"""Inference functions compiled by TorchInductor with a module's weights frozen into the program.

`FrozenFunction(fn, module)` calls `fn(module, *args)` through `torch.compile` with inductor's
`freezing` (weights become constants: prepacked GEMM weights, folded biases, fused element-wise
kernels) and, by default, the C++ wrapper (no Python between kernels): faster per frame than prepacked
eager kernels (`distilkit.prepack`); benchmarks/tracker_speed.py measures both side by side.

Two hazards of plain `torch.compile` with freezing are handled here. Dynamo keeps compiled programs
per Python code object, and its guards see neither in-place weight changes nor, for a module reached
as `self`, which instance it is: after a weight change, or for a second model compiled from the same
code, the cached program with the old (or the other model's) frozen weights runs silently (measured,
torch 2.14). So every `FrozenFunction` compiles a private copy of `fn`'s code, and a
`distilkit.fingerprint.ModuleFingerprint` checked per call (weights, submodules, train/eval flags)
starts a new copy when anything changed.

TorchInductor's config and C++ builder are private torch modules: `compiler_status()` checks for every piece
used here, so a torch without them reports why and callers that compile by choice (the benchmarks) stay eager.
"""

from __future__ import annotations

import importlib
import itertools
import logging
import sys
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from distilkit.errors import DistilkitError
from distilkit.fingerprint import ModuleFingerprint

__all__ = ["FrozenFunction", "compiler_available", "compiler_status"]

_copies = itertools.count()
_skip_module_guards = getattr(torch.compiler, "skip_guard_on_all_nn_modules_unsafe", None)
_GUARD_OPTIONS = {"guard_filter_fn": _skip_module_guards} if _skip_module_guards is not None else None
#: the options `FrozenFunction` sets through `torch._inductor.config.patch` (all must exist in this torch)
_INDUCTOR_OPTIONS = ("freezing", "cpp_wrapper", "max_autotune")
NO_COMPILER = "unavailable: no C++ compiler found (install g++ or set CXX)"


def compiler_status() -> str:
    """One line: 'available', or 'unavailable: <reason>' when this torch lacks the private TorchInductor
    pieces used here (its config and C++ builder) or no C++ compiler for CPU kernels is found."""
    _import_cpp_extension_quietly()
    try:
        config = importlib.import_module("torch._inductor.config")
        cpp_builder = importlib.import_module("torch._inductor.cpp_builder")
    except ImportError as err:
        return f"unavailable: this torch has no TorchInductor config or C++ builder ({err})"
    missing = [f"torch._inductor.config.{name}" for name in ("patch", *_INDUCTOR_OPTIONS) if not hasattr(config, name)]
    missing += [] if hasattr(cpp_builder, "get_cpp_compiler") else ["torch._inductor.cpp_builder.get_cpp_compiler"]
    if missing:
        return f"unavailable: this torch lacks {', '.join(missing)} (private TorchInductor API)"
    try:
        cpp_builder.get_cpp_compiler()
    except Exception:  # noqa: BLE001 - any failure means inductor cannot build CPU kernels here
        return NO_COMPILER
    return "available"


def compiler_available() -> bool:
    """True when TorchInductor can compile CPU kernels here (see `compiler_status` for why not)."""
    return compiler_status() == "available"


def _private_copy(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` with a code object of its own, so dynamo's per-code cache is never shared with another copy."""
    code = fn.__code__.replace(co_name=f"{fn.__code__.co_name}_frozen{next(_copies)}")
    copy = types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    return copy


def _import_cpp_extension_quietly() -> None:
    """CUDA builds of torch log 'No CUDA runtime is found' once, when `torch.utils.cpp_extension` is
    first imported (inductor needs it to build CPU kernels): import it first with that logger muted.
    Muting per call instead cost about 0.2 ms a frame (`Logger.setLevel` clears every logger's cache)."""
    if "torch.utils.cpp_extension" in sys.modules:
        return
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        importlib.import_module("torch.utils.cpp_extension")
    finally:
        logger.setLevel(level)


class FrozenFunction:
    """`fn(module, *args)` compiled for inference with `module`'s weights frozen; call it as `f(*args)`.

    Calls run without autograd (outputs never require grad). The first call for a new input shape, and
    the first call after weights, submodules or the train/eval mode changed, compile (seconds); later
    calls reuse the compiled program, which holds its own (prepacked) copy of the weights.
    max_autotune: let inductor benchmark GEMM implementations while compiling (slower compile).
    """

    def __init__(self, fn: Callable[..., Any], module: nn.Module, *, cpp_wrapper: bool = True,
                 max_autotune: bool = False) -> None:
        if not isinstance(fn, types.FunctionType):
            raise DistilkitError(f"FrozenFunction needs a plain function fn(module, *args), got {type(fn).__name__} "
                                 "(for a method, pass the class's function, e.g. type(model).forward)")
        status = compiler_status()
        if status != "available":
            raise DistilkitError(f"cannot compile with TorchInductor here: {status.removeprefix('unavailable: ')}")
        self.fn, self.module = fn, module
        self.options = {"freezing": True, "cpp_wrapper": cpp_wrapper, "max_autotune": max_autotune}
        self._compiled: Callable[..., Any] | None = None
        self._fingerprint = ModuleFingerprint(module)
        self._inductor_config = importlib.import_module("torch._inductor.config")  # ~0.8 s: only when used
        #: how many times a program was started from scratch (first call, or the module changed)
        self.compiles = 0

    def __call__(self, *args: Any) -> Any:
        if self._fingerprint.changed() or self._compiled is None:
            # guards on the module's own tensors are left out: the fingerprint covers them, at a fifth of the cost
            self._compiled = torch.compile(_private_copy(self.fn), dynamic=False, options=_GUARD_OPTIONS)
            self.compiles += 1
        # torch.compile(options={"freezing": True}) does not freeze (measured, torch 2.14): patch the config
        with torch.no_grad(), self._inductor_config.patch(self.options):
            return self._compiled(self.module, *args)
