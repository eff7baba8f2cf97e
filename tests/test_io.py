"""distilkit.io: safetensors + arch.json round trips of depth- and width-pruned models, and errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from collections import OrderedDict

import pytest
import timm
import torch
from safetensors.torch import save_model
from torch import nn

from distilkit import io
from distilkit.depth import shallow_copy
from distilkit.errors import DistilkitError

pytestmark = pytest.mark.isa_sensitive  # float results: rerun under .ci/avx2.env

VIT = dict(img_size=32, patch_size=8, num_classes=10)


def slice_mlp(block: nn.Module, hidden: int) -> None:
    """Keep `hidden` fc1 outputs / fc2 inputs, as a width pruner would."""
    fc1, fc2 = block.mlp.fc1, block.mlp.fc2
    keep = torch.randperm(fc1.out_features)[:hidden].sort().values
    new1, new2 = nn.Linear(fc1.in_features, hidden), nn.Linear(hidden, fc2.out_features)
    with torch.no_grad():
        new1.weight.copy_(fc1.weight[keep]), new1.bias.copy_(fc1.bias[keep])
        new2.weight.copy_(fc2.weight[:, keep]), new2.bias.copy_(fc2.bias)
    block.mlp.fc1, block.mlp.fc2 = new1, new2


def pruned_vit() -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **VIT).eval()
    for i in [10, 8, 7, 4, 3, 0]:  # 6 of 12 blocks, by hand
        del model.blocks[i]
    for i, block in enumerate(model.blocks):
        slice_mlp(block, 700 - 97 * i)
    return model


def test_pruned_timm_vit_round_trip_without_pruning_code(tmp_path) -> None:
    model, x = pruned_vit(), torch.randn(2, 3, 32, 32)
    out = io.save(model, tmp_path / "ckpt")
    assert sorted(p.name for p in out.iterdir()) == ["arch.json", "model.safetensors"]
    spec = json.loads((out / "arch.json").read_text())
    assert spec["format"] == "distilkit-arch/1" and spec["factory"] == "timm"
    assert spec["config"]["architecture"] == "vit_tiny_patch16_224"
    assert spec["param_count"] == sum(p.numel() for p in model.parameters())
    assert {e["path"] for e in spec["edits"]} >= {"blocks.0.mlp.fc1", "blocks.5.mlp.fc2"}
    torch.save(x, tmp_path / "x.pt")
    torch.save(model(x).detach(), tmp_path / "y.pt")
    script = textwrap.dedent(
        f"""
        import sys, torch
        torch.set_num_threads(1)  # as the test process (conftest): same kernels, same summation order
        from distilkit import io
        model = io.load({str(out)!r}).eval()
        x = torch.load({str(tmp_path / 'x.pt')!r}); y = torch.load({str(tmp_path / 'y.pt')!r})
        # exact: the same weights through the same kernels (one thread, the ISA this process inherits)
        assert torch.equal(model(x), y), (model(x) - y).abs().max()
        assert [b.mlp.fc1.out_features for b in model.blocks] == [700 - 97 * i for i in range(6)]
        assert not [m for m in sys.modules if m.startswith(("distilkit.depth", "distilkit.width"))]
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.parametrize("name, kwargs", [
    ("vit_tiny_patch16_224", dict(drop_path_rate=0.1, init_values=1e-5, qk_norm=True)),  # common training options
    ("eva02_tiny_patch14_224", dict(img_size=28, patch_size=14)),  # qkv bias kept apart, as q_bias / v_bias
])
def test_timm_constructor_options_are_recovered(tmp_path, name, kwargs) -> None:
    from distilkit.depth import remove_layers

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10, depth=4, **kwargs)
    remove_layers(model, [1])
    model.eval()
    x = torch.randn(2, 3, 28 if "img_size" in kwargs else 224, 28 if "img_size" in kwargs else 224)
    loaded = io.load(io.save(model, tmp_path)).eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    if "drop_path_rate" in kwargs:  # the remaining blocks keep their own drop rates
        assert [b.drop_path1.drop_prob for b in loaded.blocks[1:]] == [b.drop_path1.drop_prob for b in model.blocks[1:]]


class NamedStack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(OrderedDict((f"b{i}", nn.Linear(4, 4)) for i in range(4)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def test_depth_pruned_named_sequential_keeps_its_names(tmp_path) -> None:
    from distilkit.depth import remove_layers

    io.register_factory("test-named", NamedStack)
    model = NamedStack()
    remove_layers(model, [1], blocks="layers")
    io.save(model, tmp_path, arch={"factory": "test-named", "config": {}})
    edits = json.loads((tmp_path / "arch.json").read_text())["edits"]
    assert edits == [{"op": "keep", "path": "layers", "keys": ["b0", "b2", "b3"]}]
    loaded, x = io.load(tmp_path), torch.randn(3, 4)
    assert list(loaded.layers._modules) == ["b0", "b2", "b3"] and torch.equal(loaded(x), model(x))


def test_wrapped_models_save_as_the_model_inside(tmp_path) -> None:
    """DataParallel and torch.compile wrappers are saved as the module they wrap (state-dict keys too)."""
    model, x = pruned_vit(), torch.randn(1, 3, 32, 32)
    for i, wrapped in enumerate((nn.DataParallel(model), torch.compile(model), torch.compile(nn.DataParallel(model)))):
        back = io.load(io.save(wrapped, tmp_path / str(i))).eval()
        assert type(back) is type(model)
        assert torch.equal(back(x), model(x))


class Tied(nn.Module):
    def __init__(self, depth: int = 6, dim: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, dim)
        self.layers = nn.Sequential(*[self.block(dim) for _ in range(depth)])
        self.out = nn.Linear(dim, 11, bias=False)
        self.out.weight = self.embed.weight  # tied

    @staticmethod
    def block(dim: int) -> nn.Sequential:
        return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.GELU(), nn.Linear(3 * dim, dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.layers(self.embed(ids)))


def test_registered_factory_with_truncated_container_and_tied_weights(tmp_path) -> None:
    io.register_factory("test-tied", Tied)
    torch.manual_seed(0)
    model = Tied(depth=6)
    del model.layers[4], model.layers[1]
    inner = model.layers[0]
    inner[1], inner[3] = nn.Linear(8, 5), nn.Linear(5, 8)
    model.layers[2][0] = nn.LayerNorm(8, eps=1e-3)
    io.save(model, tmp_path, arch={"factory": "test-tied", "config": {"depth": 6}})
    edits = json.loads((tmp_path / "arch.json").read_text())["edits"]
    assert edits[0] == {"op": "truncate", "path": "layers", "length": 4}
    assert any(e["path"] == "layers.2.0" and e["attrs"] == {"eps": 1e-3} for e in edits)
    loaded = io.load(tmp_path)
    ids = torch.randint(0, 11, (2, 5))
    assert torch.equal(loaded(ids), model(ids))
    assert loaded.out.weight is loaded.embed.weight and len(loaded.layers) == 4
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_arch_spec_naming_a_registered_factory_and_belt_and_braces_edits(tmp_path) -> None:
    class Net(Tied):
        def __init__(self, depth: int = 6) -> None:
            super().__init__(depth)
            self.depth = depth

        def arch_spec(self) -> dict:
            return {"factory": "test-arch-spec", "config": {"depth": self.depth}}

    model = Net(depth=3)
    model.layers[2][1], model.layers[2][3] = nn.Linear(8, 2), nn.Linear(2, 8)  # not in the config
    with pytest.raises(DistilkitError, match="unknown factory 'test-arch-spec'"):  # what load could not rebuild
        io.save(model, tmp_path / "unregistered")
    assert not (tmp_path / "unregistered").exists()
    io.register_factory("test-arch-spec", Net)
    io.save(model, tmp_path)
    spec = io.read_arch(tmp_path)
    assert spec["factory"] == "test-arch-spec" and spec["config"] == {"depth": 3}
    ids = torch.randint(0, 11, (1, 4))
    assert torch.equal(io.load(tmp_path)(ids), model(ids))


def rewrite(path, **changes) -> None:
    spec = json.loads((path / "arch.json").read_text())
    spec.update(changes)
    (path / "arch.json").write_text(json.dumps(spec))


def test_errors_name_the_file_and_key(tmp_path) -> None:
    with pytest.raises(DistilkitError, match="does not exist"):
        io.load(tmp_path / "nope")
    with pytest.raises(DistilkitError, match=f"{tmp_path} has no arch.json"):
        io.load(tmp_path)
    (tmp_path / "arch.json").write_text("{not json")
    with pytest.raises(DistilkitError, match="arch.json: malformed JSON"):
        io.load(tmp_path)
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, **VIT)
    io.save(model, tmp_path)
    rewrite(tmp_path, factory="os:system")
    with pytest.raises(DistilkitError, match="unknown factory 'os:system'"):
        io.load(tmp_path)
    rewrite(tmp_path, factory="not_a_module_xyz:build")
    with pytest.raises(DistilkitError, match="unknown factory"):
        io.load(tmp_path)
    assert "not_a_module_xyz" not in sys.modules
    rewrite(tmp_path, factory="timm", edits=[{"op": "reshape", "path": "head", "attrs": {"out_features": 7},
                                                "tensors": {"weight": {"kind": "param", "shape": [7, 192]}}}])
    with pytest.raises(DistilkitError, match=r"model.safetensors: head.weight has shape \(10, 192\)"):
        io.load(tmp_path)
    rewrite(tmp_path, edits=[], config={"architecture": "vit_tiny_patch16_224", "kwargs": {**VIT, "depth": 3}})
    with pytest.raises(DistilkitError, match="model.safetensors: missing tensor 'blocks.2"):
        io.load(tmp_path)
    with pytest.raises(DistilkitError, match="cannot describe the architecture of Sequential"):
        io.save(nn.Sequential(nn.Linear(2, 2)), tmp_path / "x")
    with pytest.raises(DistilkitError, match="unknown factory 'never-registered'"):
        io.save(nn.Linear(2, 2), tmp_path / "y", arch={"factory": "never-registered", "config": {}})


def test_factory_taking_one_config_argument(tmp_path) -> None:
    def build_from_config(config: dict) -> nn.Module:
        return Tied(depth=config["depth"])

    io.register_factory("test-config-arg", build_from_config)
    model = Tied(depth=2)
    io.save(model, tmp_path, arch={"factory": "test-config-arg", "config": {"depth": 2}})
    ids = torch.randint(0, 11, (1, 3))
    assert torch.equal(io.load(tmp_path)(ids), model(ids))


def test_saving_a_model_with_an_active_pruner_warns(tmp_path) -> None:
    from distilkit.depth import ProgressiveDepthPruner

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **VIT, depth=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        io.save(model, tmp_path / "plain")  # no hooks, no warning
    ProgressiveDepthPruner(model, [0])
    with pytest.warns(UserWarning, match="blocks.0.drop_path1 has forward hooks, which are not saved"):
        io.save(model, tmp_path / "faded")


def test_mixed_dtypes_come_back_as_saved(tmp_path) -> None:
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **VIT, depth=2).eval()
    model.head.half()
    loaded = io.load(io.save(model, tmp_path))
    assert loaded.head.weight.dtype == torch.float16 and loaded.blocks[0].attn.qkv.weight.dtype == torch.float32
    assert torch.equal(loaded.head.weight, model.head.weight)
    wide = timm.create_model("vit_tiny_patch16_224", pretrained=False, **VIT, depth=1).double()
    with torch.no_grad():
        wide.head.weight.add_(torch.randn_like(wide.head.weight) * 1e-9)  # not representable in float32
    assert torch.equal(io.load(io.save(wide, tmp_path / "f64")).head.weight, wide.head.weight)


def test_weights_and_arch_of_different_saves_are_refused(tmp_path) -> None:
    """Each file is replaced atomically, the pair is not: a save interrupted between the two leaves new
    weights beside the old arch.json, which must not load as if it were one model."""
    io.register_factory("test-linear", lambda: nn.Linear(3, 2))
    arch = {"factory": "test-linear", "config": {}}
    io.save(nn.Linear(3, 2), tmp_path / "m", arch=arch)
    old_arch = (tmp_path / "m" / "arch.json").read_text()
    io.load(tmp_path / "m")
    io.save(nn.Linear(3, 2), tmp_path / "m", arch=arch)
    io.load(tmp_path / "m")
    (tmp_path / "m" / "arch.json").write_text(old_arch)  # as if the second save had stopped after the weights
    with pytest.raises(DistilkitError, match="model.safetensors and arch.json were written by different saves") as info:
        io.load(tmp_path / "m")
    assert "unreadable" not in str(info.value)  # a DistilkitError is a ValueError: not re-reported as a bad file
    spec = json.loads(old_arch)
    del spec["save_id"]  # an arch.json from before save ids, beside new weights: refused as well
    (tmp_path / "m" / "arch.json").write_text(json.dumps(spec))
    with pytest.raises(DistilkitError, match="written by different saves"):
        io.load(tmp_path / "m")
    save_model(nn.Linear(3, 2), str(tmp_path / "m" / "model.safetensors"), metadata={"format": io.FORMAT})
    assert isinstance(io.load(tmp_path / "m"), nn.Linear)  # a pair from before save ids still loads


def test_skip_k_student_of_a_drop_path_vit_round_trip(tmp_path) -> None:
    """A Tea-skip student keeps blocks 1, 3, 5: its first block has a drop-path rate > 0 (DropPath), where
    a fresh timm build of depth 3 has Identity; the saved file rebuilds the student's own modules."""
    torch.manual_seed(0)
    deep = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=6, drop_path_rate=0.1, **VIT)
    student = shallow_copy(deep, 3, method="skip")
    io.save(student, tmp_path / "s")
    back = io.load(tmp_path / "s")

    def drop_paths(model):
        return [(type(m).__name__, getattr(m, "drop_prob", None)) for b in model.blocks for m in (b.drop_path1, b.drop_path2)]

    assert drop_paths(back) == drop_paths(student) and drop_paths(student)[0][0] == "DropPath"
    x = torch.randn(2, 3, 32, 32)
    for mode in (False, True):  # eval, then training (same random drops under the same seed)
        student.train(mode), back.train(mode)
        torch.manual_seed(1)
        want = student(x)
        torch.manual_seed(1)
        torch.testing.assert_close(back(x), want)
    spec = json.loads((tmp_path / "s" / "arch.json").read_text())
    spec["edits"].insert(0, {"op": "replace", "path": "blocks.0.drop_path1", "class": "os.system"})
    (tmp_path / "s" / "arch.json").write_text(json.dumps(spec))
    with pytest.raises(DistilkitError, match="cannot replace 'blocks.0.drop_path1' by 'os.system'"):
        io.load(tmp_path / "s")
