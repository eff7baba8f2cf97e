"""distilkit.compiled and MixFormerV2.compile_search: compiled outputs equal eager ones, never with
another model's or stale weights, and templates change without recompiling."""

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch._C._dynamo.eval_frame import _debug_get_cache_entry_list  # how many programs dynamo holds

import distilkit.compiled
from distilkit.compiled import FrozenFunction, compiler_available
from distilkit.errors import DistilkitError
from distilkit.trackers.mixformerv2 import MixFormerV2Tracker, build_model

pytestmark = [pytest.mark.isa_sensitive, pytest.mark.skipif(not compiler_available(), reason="TorchInductor has no C++ compiler "
                                                                                             "here")]


def _apply(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module(x)


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 4)).eval()


def _eager(module: nn.Module, *args) -> torch.Tensor:
    with torch.no_grad():
        return module(*args)


def test_two_modules_from_one_function_keep_their_own_weights_and_edits_recompile():
    """Also: weight edits, replaced submodules and train/eval switches start a new program."""
    a, b, x = _mlp(0), _mlp(1), torch.randn(5, 16)
    fa, fb = FrozenFunction(_apply, a), FrozenFunction(_apply, b)
    assert torch.allclose(fa(x), _eager(a, x), atol=1e-5)
    assert torch.allclose(fb(x), _eager(b, x), atol=1e-5)
    assert not torch.allclose(_eager(a, x), _eager(b, x), atol=1e-3)
    with torch.no_grad():
        a[0].weight.mul_(-1.5)
    out = fa(x)  # dynamo's guards do not see the change: without a new program the old weights would run
    assert fa.compiles == 2, "an in-place weight change must start a new program"
    assert torch.allclose(out, _eager(a, x), atol=1e-5)
    assert not out.requires_grad
    a[2] = nn.Linear(32, 4)  # a replaced submodule, as pruning does
    assert torch.allclose(fa(x), _eager(a, x), atol=1e-5) and fa.compiles == 3
    a.train()  # a train-mode call must not reuse the eval-mode program (dropout, batch norm)
    assert torch.allclose(fa(x), _eager(a, x), atol=1e-5) and fa.compiles == 4


def test_no_compiler_or_a_bound_method_is_a_clear_error(monkeypatch):
    model = _mlp(0)
    with pytest.raises(DistilkitError, match="plain function"):
        FrozenFunction(model.forward, model)
    monkeypatch.setattr(distilkit.compiled, "compiler_status", lambda: distilkit.compiled.NO_COMPILER)
    with pytest.raises(DistilkitError, match="cannot compile with TorchInductor here: no C\\+\\+ compiler"):
        FrozenFunction(_apply, model)


def _inputs(cfg, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 3, cfg.template_size, cfg.template_size, generator=g),
            torch.randn(2, 3, cfg.search_size, cfg.search_size, generator=g))


def _assert_same(out: dict, ref: dict) -> None:
    assert set(out) == set(ref)
    for key in ref:
        assert torch.allclose(out[key], ref[key], atol=1e-5), key


def test_compiled_search_equals_eager_across_template_changes_and_falls_back_for_training():
    torch.manual_seed(0)
    model = build_model("mixformerv2-s-tiny", score_head=True).eval()
    eager = copy.deepcopy(model)
    model.compile_search()
    assert model.search_compiled and not copy.deepcopy(model).search_compiled
    for seed in (0, 1):  # new templates are new inputs of the same program
        template, search = _inputs(model.config, seed)
        with torch.no_grad():
            model.set_templates(template, template)
            eager.set_templates(template, template)
            _assert_same(model.forward_search(search), eager.forward_search(search))
            _assert_same(model.forward_search(search, skip_unused=False), eager.forward_search(search, skip_unused=False))
    assert model._compiled_search.compiles == 1
    out = model.forward_search(search)  # autograd on: the eager path, so training still works
    assert out["boxes"].requires_grad
    model.compile_search(False)
    assert not model.search_compiled


def _frames(n: int, size: int = 96) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    frames = []
    for i in range(n):
        img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        img[30 + i:50 + i, 20 + 2 * i:44 + 2 * i] = 230
        frames.append(img)
    return frames


@pytest.mark.slow
def test_compiled_tracker_follows_the_eager_one_through_online_updates():
    torch.manual_seed(0)
    model = build_model("mixformerv2-s-tiny", score_head=True).eval()
    frames = _frames(7)
    runs = []
    for compiled in (False, True):
        tracker = MixFormerV2Tracker(model, update_interval=2, score_threshold=-1.0, prepack=False, compile=compiled)
        if compiled:
            assert tracker.model is not model and tracker.model.search_compiled
        tracker.initialize(frames[0], np.array([20.0, 30.0, 24.0, 20.0]))
        runs.append([tracker.track(f) for f in frames[1:]])
        if compiled:  # initialize's warm-up compiled the very program the frames use: no second one
            code = tracker.model._compiled_search._compiled._torchdynamo_orig_callable.__code__
            assert len(_debug_get_cache_entry_list(code)) == 1
    assert not model.search_compiled, "the caller's model must stay as it was"
    for (box_e, score_e), (box_c, score_c) in zip(*runs):
        assert np.allclose(box_c, box_e, atol=1e-3) and abs(score_c - score_e) < 1e-5


def test_eval_compile_flag_tracks_like_eager_and_prepares_the_model_once(tmp_path, monkeypatch):
    from distilkit import io
    from distilkit.cli import main
    from distilkit.commands.eval import _tracker_factory

    torch.manual_seed(0)
    saved = str(io.save(build_model("mixformerv2-s-tiny", score_head=True), tmp_path / "model"))
    make = _tracker_factory(saved, "synthetic", None, "cpu", compile_=True)
    assert make().model is make().model and make().model.search_compiled
    code = make().model._compiled_search._compiled._torchdynamo_orig_callable.__code__
    assert len(_debug_get_cache_entry_list(code)) == 1  # compiled before any sequence is timed (FPS)
    boxes = {}
    for flag in ([], ["--compile"]):
        out = tmp_path / ("compiled" if flag else "eager")
        with pytest.raises(SystemExit) as exc:
            main(["eval", saved, "--data", "synthetic:1", "--no-progress", "--name", "m", "--out", str(out), *flag])
        assert exc.value.code == 0
        boxes[bool(flag)] = np.loadtxt(out / "m" / "synthetic-test-0000.txt", delimiter=",")
    assert np.allclose(boxes[True], boxes[False], atol=1e-2)
    monkeypatch.setattr(distilkit.compiled, "compiler_status", lambda: distilkit.compiled.NO_COMPILER)
    with pytest.raises(SystemExit) as exc:
        main(["eval", saved, "--data", "synthetic:1", "--no-progress", "--compile"])
    assert exc.value.code == 2


def test_cpu_machines_see_no_cuda_home_warning():
    """CUDA builds of torch log 'No CUDA runtime is found' when inductor first imports cpp_extension."""
    plain = subprocess.run([sys.executable, "-c", "import torch.utils.cpp_extension"], capture_output=True, text=True)
    if "No CUDA runtime" not in plain.stderr:
        pytest.skip("this torch build does not log the warning here")
    code = ("import torch\nfrom distilkit.compiled import FrozenFunction\n"
            "def f(m, x):\n    return m(x)\n"
            "print(FrozenFunction(f, torch.nn.Linear(4, 2).eval())(torch.randn(3, 4)).shape)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "No CUDA runtime" not in proc.stderr


def test_compile_search_loads_the_native_kernel_for_cpu_models_only(monkeypatch):
    import distilkit.trackers.mixformerv2.model as model_module

    calls = []
    monkeypatch.setattr(model_module, "load_native", lambda: calls.append(1) or True)
    model = build_model("mixformerv2-s-tiny").eval()
    model.compile_search()
    assert calls == [1]
    model.to("meta").compile_search()  # stands for a GPU model: the CPU kernel would never run
    assert calls == [1]
