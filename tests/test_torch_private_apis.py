"""The private torch APIs behind prepacking (oneDNN ops, the dispatch-mode stack) and compiling (TorchInductor's
config and C++ builder) are feature-detected: a torch without them reports why and tracking stays eager."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

import distilkit.compiled
from distilkit import kernels
from distilkit.compiled import FrozenFunction, compiler_available, compiler_status
from distilkit.errors import DistilkitError
from distilkit.kernels import native
from distilkit.prepack import PrepackedLinear, prepack_available, prepack_linears, prepack_status
from distilkit.trackers.mixformerv2 import MixFormerV2Tracker, build_model


def _tracks_eagerly() -> None:
    model = build_model("mixformerv2-s-tiny")
    tracker = MixFormerV2Tracker(model)  # prepack=True by default: falls back to the plain model
    assert tracker.view_kind is None and tracker.model is model
    assert not any(isinstance(m, PrepackedLinear) for m in tracker.model.modules())
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    tracker.initialize(image, np.array([40.0, 30.0, 20.0, 16.0]))
    box, _ = tracker.track(image)
    assert box.shape == (4,) and np.isfinite(box).all()


def test_prepack_without_the_dispatch_stack_check_tracks_eagerly(monkeypatch) -> None:
    monkeypatch.delattr(torch._C, "_len_torch_dispatch_stack")
    assert not prepack_available()
    assert prepack_status() == ("unavailable: this torch lacks torch._C._len_torch_dispatch_stack "
                                "(private oneDNN / dispatch API)")
    with pytest.raises(RuntimeError, match="prepack_linears: unavailable: this torch lacks torch._C._len_torch"):
        prepack_linears(nn.Linear(2, 2))
    _tracks_eagerly()


def test_prepack_without_onednn_ops_or_onednn(monkeypatch) -> None:
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.ops, "mkldnn", types.SimpleNamespace())  # a torch whose oneDNN ops were renamed
    assert prepack_status() == ("unavailable: this torch lacks torch.ops.mkldnn._linear_pointwise, "
                                "torch.ops.mkldnn._reorder_linear_weight (private oneDNN / dispatch API)")
    _tracks_eagerly()
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert prepack_status() == "unavailable: this torch build has no oneDNN (torch.backends.mkldnn)"


def _double(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module(x) * 2


def test_compile_without_inductor_internals_reports_why(monkeypatch) -> None:
    import torch._inductor.cpp_builder as cpp_builder

    monkeypatch.delattr(cpp_builder, "get_cpp_compiler")
    assert compiler_status() == ("unavailable: this torch lacks torch._inductor.cpp_builder.get_cpp_compiler "
                                 "(private TorchInductor API)")
    monkeypatch.setitem(sys.modules, "torch._inductor.cpp_builder", None)  # the module itself moved
    assert compiler_status().startswith("unavailable: this torch has no TorchInductor config or C++ builder")
    assert not compiler_available()
    with pytest.raises(DistilkitError, match="cannot compile with TorchInductor here: this torch has no TorchInductor"):
        FrozenFunction(_double, nn.Linear(2, 2))
    with pytest.raises(DistilkitError, match="cannot compile with TorchInductor here"):
        MixFormerV2Tracker(build_model("mixformerv2-s-tiny"), compile=True)  # asked for explicitly: an error


def test_native_kernels_need_a_compiler_not_inductor_internals(monkeypatch) -> None:
    """Only a missing compiler stops the native build; without inductor's private pieces it is still tried."""
    from torch.utils import cpp_extension

    tried = []
    monkeypatch.setattr(native, "_state", native._State())
    monkeypatch.setattr(distilkit.compiled, "compiler_status", lambda: "unavailable: this torch lacks x")
    monkeypatch.setattr(cpp_extension, "is_ninja_available", lambda: True)

    def load(**kwargs):
        tried.append(kwargs["name"])
        raise OSError("no")

    monkeypatch.setattr(cpp_extension, "load", load)
    assert kernels.load_native() is False and len(tried) == 1
    assert kernels.native_status() == "unavailable: build or load failed: OSError: no"
    monkeypatch.setattr(native, "_state", native._State())
    monkeypatch.setattr(distilkit.compiled, "compiler_status", lambda: distilkit.compiled.NO_COMPILER)
    assert kernels.load_native() is False and len(tried) == 1
    assert kernels.native_status() == "unavailable: no C++ compiler found (install g++ or set CXX)"
