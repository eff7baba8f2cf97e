"""Width-pruned timm ViTs save through distilkit.io and rebuild from arch.json alone."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import timm
import torch

from distilkit import io
from distilkit.schedule import LinearSchedule
from distilkit.width import ProgressiveWidthPruner, reduce_mlp_ratio

pytestmark = pytest.mark.isa_sensitive  # float results: rerun under .ci/avx2.env


def tiny_vit(depth: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=depth).eval()


def widths(model: torch.nn.Module) -> list[tuple[int, int]]:
    return [(b.mlp.fc1.out_features, b.mlp.fc2.in_features) for b in model.blocks]


def test_uniform_and_mixed_widths_round_trip(tmp_path):
    x = torch.randn(2, 3, 32, 32)
    uniform = tiny_vit()
    reduce_mlp_ratio(uniform, 1.0)
    mixed = tiny_vit()
    reduce_mlp_ratio(mixed, hidden=100, block_indices=[0, 2])
    for name, model in (("uniform", uniform), ("mixed", mixed)):
        io.save(model, tmp_path / name)
        loaded = io.load(tmp_path / name).eval()
        assert widths(loaded) == widths(model)
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))
    assert widths(mixed) == [(100, 100), (768, 768), (100, 100)]


def test_progressive_result_rebuilds_without_the_pruning_code(tmp_path):
    """Load in a fresh interpreter where distilkit.width and torch_pruning cannot be imported."""
    model = tiny_vit()
    pruner = ProgressiveWidthPruner(model, hidden=64, schedule=LinearSchedule(m=1), block_indices=[1])
    pruner.set_epoch(1)
    pruner.finalize()
    io.save(model, tmp_path / "m")
    torch.manual_seed(5)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # as the check below runs it
        y = model(x)
    torch.save({"x": x, "y": y, "state": model.state_dict()}, tmp_path / "io.pt")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["distilkit.width"] = None
        sys.modules["torch_pruning"] = None
        import torch
        torch.set_num_threads(1)  # as the test process (conftest): same kernels, same summation order
        from distilkit import io
        model = io.load({str(tmp_path / "m")!r}).eval()
        ref = torch.load({str(tmp_path / "io.pt")!r})
        assert [b.mlp.fc1.out_features for b in model.blocks] == [768, 64, 768]
        assert all(torch.equal(t, ref["state"][k]) for k, t in model.state_dict().items())  # storage is exact
        with torch.no_grad():
            # exact: the same weights through the same kernels (one thread, the ISA this process inherits)
            assert torch.equal(model(ref["x"]), ref["y"])
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"
