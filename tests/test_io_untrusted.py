"""distilkit.io with untrusted model folders: only registered builders run, configs are plain data of the
expected shape, absurd sizes and damaged files are one-line errors, and edited or non-finite files warn."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import save_model
from torch import nn

from distilkit import factories, io
from distilkit.cli import main
from distilkit.errors import DistilkitError

VIT = dict(img_size=32, patch_size=8, num_classes=10, depth=2)


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its content (None for directories): to prove nothing was written."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def rewrite(folder: Path, **changes) -> None:
    spec = json.loads((folder / "arch.json").read_text())
    spec.update(changes)
    (folder / "arch.json").write_text(json.dumps(spec))


@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return io.save(timm.create_model("vit_tiny_patch16_224", pretrained=False, **VIT), tmp_path_factory.mktemp("m") / "vit")


@pytest.fixture(scope="module")
def tracker_folder(tmp_path_factory) -> Path:
    from distilkit.trackers.mixformerv2 import build_model

    return io.save(build_model("mixformerv2-s-tiny"), tmp_path_factory.mktemp("m") / "tracker")


@pytest.fixture
def copy_of(tmp_path):
    def copy(folder: Path) -> Path:
        out = tmp_path / "model"
        out.mkdir()
        for name in ("arch.json", "model.safetensors"):
            (out / name).write_bytes((folder / name).read_bytes())
        return out

    return copy


# -- finding 1: only registered builders, plain-data configs -------------------------------------
def crafted(target: Path) -> list[tuple[str, dict]]:
    """(factory, config) pairs naming callables that write, create or run something, or are no builders."""
    return [
        ("distilkit.atomic:write_atomic", {"path": str(target), "data": "written by arch.json"}),
        ("distilkit.io:make_output_dir", {"path": str(target)}),
        ("os:system", {"command": f"touch {target}"}),
        ("builtins:open", {"file": str(target), "mode": "w"}),
        ("torch:save", {"obj": 1, "f": str(target)}),
        ("pathlib:Path", {"args": [str(target)]}),
        ("distilkit.trackers.mixformerv2:build_model", {"name": "mixformerv2-s-tiny"}),  # a builder, not registered
        ("distilkit.trackers.mixformerv2.model:build_model_from_config", {}),  # the registered one, named otherwise
        (" timm", {"architecture": "vit_tiny_patch16_224"}),
        ("", {}),
    ]


@pytest.mark.parametrize("case", range(len(crafted(Path("x")))))
def test_a_factory_nobody_registered_is_refused_and_runs_nothing(tmp_path, copy_of, vit_folder, monkeypatch, case) -> None:
    folder = copy_of(vit_folder)
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "created-by-arch-json"
    factory, config = crafted(target)[case]
    rewrite(folder, factory=factory, config=config, edits=[])
    before = tree(tmp_path)
    with pytest.raises(DistilkitError, match=f"unknown factory {factory!r}; only registered model builders") as info:
        io.load(folder)
    assert "\n" not in str(info.value)
    assert tree(tmp_path) == before and not target.exists()


def test_a_folder_never_chooses_what_is_imported(tmp_path, tracker_folder, copy_of) -> None:
    """The MixFormerV2 builder loads without the trackers package imported first (a fixed table says which
    module registers it), and no other module a file names is ever imported."""
    good = copy_of(tracker_folder)
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("arch.json", "model.safetensors"):
        (bad / name).write_bytes((good / name).read_bytes())
    rewrite(bad, factory="distilkit.recipes.runner:anything")
    script = textwrap.dedent(f"""
        import sys
        from distilkit import io
        from distilkit.errors import DistilkitError
        try:
            io.load({str(bad)!r})
        except DistilkitError as err:
            assert "unknown factory" in str(err), err
        assert not [m for m in sys.modules if m.startswith(("distilkit.trackers", "distilkit.recipes"))]
        model = io.load({str(good)!r})
        print(type(model).__name__)
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "MixFormerV2", done.stderr[-2000:]


def spy_on_timm(monkeypatch) -> list:
    calls: list = []
    original = timm.create_model

    @functools.wraps(original)
    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", spy)
    return calls


@pytest.mark.parametrize("architecture, kwargs", [
    ("hf-hub:timm/vit_tiny_patch16_224.augreg_in21k", {}),
    ("local-dir:/tmp/somewhere", {}),
    ("vit_tiny_patch16_224.augreg_in21k", {}),  # a pretrained tag
    ("vit_tiny_patch16_224/../x", {}),
    ("no_such_timm_model", {}),
    (["vit_tiny_patch16_224"], {}),
    ("vit_tiny_patch16_224", {"pretrained": True}),
    ("vit_tiny_patch16_224", {"pretrained_cfg": {"file": "/etc/passwd"}}),
    ("vit_tiny_patch16_224", {"pretrained_cfg_overlay": {"hf_hub_id": "timm/x"}}),
    ("vit_tiny_patch16_224", {"checkpoint_path": "/etc/passwd"}),
    ("vit_tiny_patch16_224", {"cache_dir": "CACHE"}),
    ("vit_tiny_patch16_224", {"features_only": True}),
    ("vit_tiny_patch16_224", {"pruned": True}),
    ("vit_tiny_patch16_224", {"weights_file": "w.bin"}),
])
def test_timm_configs_that_read_download_or_load_are_refused(tmp_path, copy_of, vit_folder, monkeypatch, architecture,
                                                              kwargs) -> None:
    folder = copy_of(vit_folder)
    monkeypatch.chdir(tmp_path)
    calls = spy_on_timm(monkeypatch)
    rewrite(folder, config={"architecture": architecture, "kwargs": {**VIT, **kwargs}}, edits=[])
    before = tree(tmp_path)
    with pytest.raises(DistilkitError, match="factory 'timm' cannot build this config: timm (architecture|kwargs)") as info:
        io.load(folder)
    assert "\n" not in str(info.value)
    assert calls == [] and tree(tmp_path) == before


def test_config_keys_and_values_must_fit_the_builder(tmp_path, copy_of, vit_folder) -> None:
    folder = copy_of(vit_folder)
    rewrite(folder, config={"architecture": "vit_tiny_patch16_224", "kwargs": VIT, "checkpoint": "x"})
    with pytest.raises(DistilkitError, match="factory 'timm' takes no config key\\(s\\) 'checkpoint'"):
        io.load(folder)
    calls: list = []
    io.register_factory("test-untrusted-linear", lambda n=3: calls.append(n) or nn.Linear(n, 2))
    with pytest.raises(DistilkitError, match="must be plain JSON data"):
        io.save(nn.Linear(3, 2), tmp_path / "a", arch={"factory": "test-untrusted-linear", "config": {"n": print}})
    with pytest.raises(DistilkitError, match="must be plain JSON data"):
        io.save(nn.Linear(3, 2), tmp_path / "b", arch={"factory": "test-untrusted-linear", "config": {"n": float("nan")}})
    assert calls == [] and not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(DistilkitError, match="register_factory\\('x'\\): 'not callable' is not callable"):
        io.register_factory("x", "not callable")


def test_save_refuses_what_load_would_refuse(tmp_path) -> None:
    io.register_factory("test-untrusted-norm", lambda: nn.LayerNorm(4))
    norm = nn.LayerNorm(4)
    norm.eps = float("nan")  # an attribute edit that arch.json cannot hold (load refuses NaN)
    with pytest.raises(DistilkitError, match="cannot save: the architecture description must be plain JSON data"):
        io.save(norm, tmp_path / "m", arch={"factory": "test-untrusted-norm", "config": {}})
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("edit, message", [
    ({"op": "replace", "path": "head", "class": "torch.nn.Linear"}, "cannot replace 'head' by 'torch.nn.Linear'"),
    ({"op": "replace", "path": "head", "class": "distilkit.atomic.write_atomic"}, "cannot replace 'head' by"),
    ({"op": "replace", "path": "head", "class": ["torch.nn.Identity"]}, "edit 0: 'class' must be a string"),
    ({"op": "exec", "path": ""}, "edit 0: needs an 'op'"),
    ({"op": "truncate", "path": "blocks", "length": -1}, "edit 0: 'length' must be an int >= 0"),
    ({"op": "reshape", "path": "head", "attrs": {"forward": 1}}, "Linear head has no plain attribute 'forward'"),
    ({"op": "reshape", "path": "head", "attrs": {"_parameters": {}}}, "edit 0: 'attrs' must map"),
    ({"op": "reshape", "path": "head", "tensors": {"weight": {"kind": "code", "shape": [1]}}}, "tensor 'weight' needs 'kind'"),
])
def test_edits_only_do_what_save_writes(copy_of, vit_folder, edit, message) -> None:
    folder = copy_of(vit_folder)
    rewrite(folder, edits=[edit])
    with pytest.raises(DistilkitError, match=message):
        io.load(folder)


# -- finding 4: absurd sizes and damaged files are one-line errors --------------------------------
@pytest.mark.parametrize("which, change", [
    ("vit", {"depth": 50_000_000}),
    ("vit", {"embed_dim": 10**6, "num_heads": 1}),
    ("tracker", {"depth": 50_000_000, "mlp_hidden": None}),
    ("tracker", {"template_size": 8 * 100_000}),
    ("tracker", {"embed_dim": 4 * 10**6, "num_heads": 1}),
])
def test_absurd_sizes_in_the_config_are_refused_quickly(copy_of, vit_folder, tracker_folder, which, change) -> None:
    folder = copy_of(vit_folder if which == "vit" else tracker_folder)
    spec = json.loads((folder / "arch.json").read_text())
    (spec["config"]["kwargs"] if which == "vit" else spec["config"]).update(change)
    (folder / "arch.json").write_text(json.dumps(spec))
    start = time.monotonic()
    with pytest.raises(DistilkitError, match="refusing to build the model|needs a position table of") as info:
        io.load(folder)
    assert time.monotonic() - start < 30 and "\n" not in str(info.value)


@pytest.mark.parametrize("shape", [[10**15], [10**5, 10**5], [10**40]])
def test_absurd_tensor_shapes_in_edits_are_refused(copy_of, vit_folder, shape) -> None:
    folder = copy_of(vit_folder)
    rewrite(folder, edits=[{"op": "reshape", "path": "head", "attrs": {},
                            "tensors": {"weight": {"kind": "param", "shape": shape}}}])
    with pytest.raises(DistilkitError, match="edit 0: shape .* for head.weight has more than distilkit.factories.MAX_ELEMENTS"):
        io.load(folder)


def test_the_element_limit_holds_for_what_a_build_makes(copy_of, vit_folder, monkeypatch) -> None:
    """Measured on the meta device before anything is allocated: a 0.9M-element ViT is refused under a 100k limit."""
    monkeypatch.setattr(factories, "MAX_ELEMENTS", 100_000)
    with pytest.raises(DistilkitError, match="refusing to build the model: more than 100,000 tensor elements"):
        io.load(copy_of(vit_folder))


def test_the_element_limit_holds_for_the_built_model(tmp_path, monkeypatch) -> None:
    """Tensors made other than by a constructor (copies of one, here) count in the built model's size."""
    def copies(n: int = 2) -> nn.Module:
        base = torch.zeros(10_000)
        return nn.ParameterList([nn.Parameter(torch.zeros_like(base)) for _ in range(n)])

    io.register_factory("test-untrusted-copies", copies)
    io.save(copies(), tmp_path, arch={"factory": "test-untrusted-copies", "config": {}})
    rewrite(tmp_path, config={"n": 20})
    monkeypatch.setattr(factories, "MAX_ELEMENTS", 100_000)
    with pytest.raises(DistilkitError, match="refusing to build the model: 200,000 tensor elements, more than 100,000"):
        io.load(tmp_path)


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, "malformed JSON: nested too deeply"),
    ('{"format": "distilkit-arch/1", "factory": "timm", "config": {"a": ' + "[" * 40 + "]" * 40 + "}}",
     "nested more than 32 levels deep"),
    ('{"format": "distilkit-arch/1", "factory": "timm", "config": {"depth": ' + "9" * 5000 + "}}", "malformed JSON: Exceeds"),
    ('{"format": "distilkit-arch/1", "factory": "timm", "config": {"eps": NaN}}', "malformed JSON: NaN is not a JSON number"),
    ('{"format": "distilkit-arch/1", "factory": "timm", "edits": [{"op": "truncate"}]}', "needs an 'op'"),
])
def test_damaged_arch_json_is_one_line(copy_of, vit_folder, text, message) -> None:
    folder = copy_of(vit_folder)
    (folder / "arch.json").write_text(text)
    with pytest.raises(DistilkitError, match=message) as info:
        io.load(folder)
    assert str(info.value).startswith(str(folder / "arch.json")) and "\n" not in str(info.value)


def test_an_oversized_arch_json_is_not_read(copy_of, vit_folder, monkeypatch) -> None:
    monkeypatch.setattr(io, "MAX_ARCH_BYTES", 100)
    with pytest.raises(DistilkitError, match="arch.json: larger than") as info:
        io.load(copy_of(vit_folder))
    assert "malformed JSON" not in str(info.value)


def damaged_header(folder: Path) -> bytes:
    data = (folder / "model.safetensors").read_bytes()
    size = int.from_bytes(data[:8], "little")
    return data[:8] + data[8:8 + size].replace(b'"__metadata__":{', b'"__metadata__":{{', 1) + data[8 + size:]


@pytest.mark.parametrize("weights", [
    damaged_header,
    lambda folder: b"",
    lambda folder: b"PK\x03\x04 a zip, or torch.save pickle, not safetensors",
    lambda folder: (1 << 40).to_bytes(8, "little") + b"{}",
])
def test_a_damaged_or_foreign_weights_file_is_one_line(copy_of, vit_folder, weights) -> None:
    folder = copy_of(vit_folder)
    (folder / "model.safetensors").write_bytes(weights(folder))
    with pytest.raises(DistilkitError, match="model.safetensors: unreadable safetensors file") as info:
        io.load(folder)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("command", [["flops"], ["eval", "--data", "synthetic:1", "--no-progress"]])
@pytest.mark.parametrize("change", [
    {"factory": "distilkit.atomic:write_atomic", "config": {"path": "pwned.txt", "data": "x"}},
    {"factory": "distilkit.io:make_output_dir", "config": {"path": "pwned"}},
    {"config": {"architecture": "vit_tiny_patch16_224", "kwargs": {**VIT, "depth": 50_000_000}}},
])
def test_cli_refuses_crafted_folders_with_one_line(tmp_path, copy_of, vit_folder, monkeypatch, capsys, command, change) -> None:
    folder = copy_of(vit_folder)
    rewrite(folder, **change)
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    with pytest.raises(SystemExit) as info:
        main([command[0], str(folder), *command[1:]])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "unknown factory" in err or "refusing to build the model" in err
    assert tree(tmp_path) == before


# -- finding 6: an edited arch.json or non-finite weights do not load silently --------------------
def test_clean_save_and_load_warn_nothing_and_bind_the_arch_hash(tmp_path, tracker_folder, vit_folder) -> None:
    for folder in (vit_folder, tracker_folder):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            io.load(folder)
        with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
            assert handle.metadata()["arch_sha256"] == io.arch_hash(json.loads((folder / "arch.json").read_text()))


def test_an_edited_arch_json_warns_naming_the_file(copy_of, vit_folder) -> None:
    folder = copy_of(vit_folder)
    spec = json.loads((folder / "arch.json").read_text())
    (folder / "arch.json").write_text(json.dumps(dict(reversed(spec.items())), indent=7))  # the same content
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        io.load(folder)
    spec["edits"].append({"op": "reshape", "path": "norm", "attrs": {"eps": 1000.0}, "tensors": {}})
    (folder / "arch.json").write_text(json.dumps(spec))
    with pytest.warns(UserWarning, match=f"{folder / 'arch.json'}: edited after the model was saved"):
        model = io.load(folder)
    assert model.norm.eps == 1000.0  # built as the file says, and said so


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_warn_naming_the_first_tensor_and_count(tmp_path, value) -> None:
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **VIT)
    with torch.no_grad():
        model.blocks[1].mlp.fc2.weight.fill_(value)
        model.head.weight[0, :3] = value
    io.save(model, tmp_path)
    with pytest.warns(UserWarning, match=r"model.safetensors: 2 tensor\(s\) hold NaN or inf values, first "
                                         r"'blocks.1.mlp.fc2.weight' \(147,456 of 147,456 values\)"):
        io.load(tmp_path)


def test_a_folder_saved_before_the_hash_loads_without_a_warning(tmp_path) -> None:
    io.register_factory("test-untrusted-old", lambda: nn.LayerNorm(4))
    io.save(nn.LayerNorm(4), tmp_path, arch={"factory": "test-untrusted-old", "config": {}})
    spec = json.loads((tmp_path / "arch.json").read_text())
    save_model(nn.LayerNorm(4), str(tmp_path / "model.safetensors"), metadata={"format": io.FORMAT, "save_id": spec["save_id"]})
    spec["edits"] = [{"op": "reshape", "path": "", "attrs": {"eps": 0.5}, "tensors": {}}]
    (tmp_path / "arch.json").write_text(json.dumps(spec))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert io.load(tmp_path).eps == 0.5
