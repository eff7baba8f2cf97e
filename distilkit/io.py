"""Save / load models as `model.safetensors` + `arch.json`: rebuilt from a factory, never unpickled.

arch.json = {"format", "factory", "config", "edits", "param_count"}. The factory is "timm"
(config: architecture name + constructor kwargs), a name given to `register_factory`, or a
"distilkit.…:function" path (a model's `arch_spec()`). `edits` is a generic structural diff
between the factory's fresh build and the saved model (shortened block containers, Linear /
Conv / LayerNorm … with new shapes, changed int/float attributes), so depth- and width-pruned
models rebuild without the code that pruned them.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distilkit.atomic import atomic_path, write_atomic
from distilkit.blocks import unwrap
from distilkit.errors import DistilkitError

FORMAT = "distilkit-arch/1"
WEIGHTS = "model.safetensors"
ARCH = "arch.json"
_FACTORIES: dict[str, Callable[..., nn.Module]] = {}
_SCALARS = (bool, int, float, str, type(None))


def register_factory(name: str, fn: Callable[..., nn.Module]) -> None:
    """Allow `load` to build models whose arch.json names factory `name`.

    It is called as fn(**config), or fn(config) when it takes a `config` parameter."""
    if not callable(fn):
        raise DistilkitError(f"register_factory({name!r}): {fn!r} is not callable")
    _FACTORIES[name] = fn


# -- factories ---------------------------------------------------------------------------------
def _resolve_factory(factory: str, where: str) -> Callable[..., nn.Module]:
    if factory in _FACTORIES:
        return _FACTORIES[factory]
    if factory == "timm":
        import timm

        def build_timm(architecture: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
            return timm.create_model(architecture, pretrained=False, **(kwargs or {}))

        return build_timm
    module_name, sep, attr = factory.partition(":")
    if sep and module_name.startswith("distilkit.") and attr:
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise DistilkitError(f"{where}: cannot import factory {factory!r}: {err}") from None
        if callable(fn):
            return fn
    raise DistilkitError(
        f"{where}: unknown factory {factory!r} (only 'timm', 'distilkit.*:fn' and names given to "
        f"distilkit.io.register_factory are built)"
    )


def _call_factory(fn: Callable[..., nn.Module], config: dict[str, Any]) -> nn.Module:
    """fn(config) for factories taking one `config` argument (e.g. build_model_from_config), else fn(**config)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    if "config" in params and "config" not in config:
        return fn(config)
    return fn(**config)


def _build(factory: str, config: dict[str, Any], where: str, device: str | torch.device = "cpu") -> nn.Module:
    fn = _resolve_factory(factory, where)
    try:
        with torch.device(device):
            model = _call_factory(fn, config)
    except DistilkitError:
        raise
    except Exception as err:  # the factory rejected the config
        raise DistilkitError(f"{where}: factory {factory!r} failed with config {config}: {err}") from None
    if not isinstance(model, nn.Module):
        raise DistilkitError(f"{where}: factory {factory!r} returned {type(model).__name__}, not an nn.Module")
    return model


def _timm_kwargs(model: nn.Module) -> dict[str, Any]:
    """Constructor kwargs recoverable from a built timm model (only those its __init__ takes)."""
    found: dict[str, Any] = {}
    for attr in ("num_classes", "in_chans", "global_pool", "embed_dim", "num_reg_tokens", "no_embed_class"):
        value = getattr(model, attr, None)
        if isinstance(value, _SCALARS) and value is not None:
            found["reg_tokens" if attr == "num_reg_tokens" else attr] = value
    if hasattr(model, "has_class_token"):
        found["class_token"] = bool(model.has_class_token)
    patch = getattr(model, "patch_embed", None)
    for attr in ("img_size", "patch_size"):
        value = getattr(patch, attr, None)
        if isinstance(value, (tuple, list)) and all(isinstance(v, int) for v in value):
            found[attr] = list(value)
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks):
        found["depth"] = len(blocks)
        attn = getattr(blocks[0], "attn", None)
        if isinstance(getattr(attn, "num_heads", None), int):
            found["num_heads"] = attn.num_heads
        qkv = getattr(attn, "qkv", None)
        if isinstance(qkv, nn.Linear):  # EVA keeps the bias apart, as q_bias / v_bias
            found["qkv_bias"] = qkv.bias is not None or isinstance(getattr(attn, "q_bias", None), nn.Parameter)
        if isinstance(getattr(attn, "q_norm", None), nn.Module):
            found["qk_norm"] = not isinstance(attn.q_norm, nn.Identity)
        if isinstance(getattr(blocks[0], "ls1", None), nn.Module):
            # any number builds LayerScale (its gamma comes from the weights file), None builds Identity
            found["init_values"] = None if isinstance(blocks[0].ls1, nn.Identity) else 1.0
        rates = [m.drop_prob for b in blocks for m in b.modules() if isinstance(getattr(m, "drop_prob", None), float)]
        if rates:  # timm spaces the rates linearly up to this; the per-block values are saved as edits
            found["drop_path_rate"] = max(rates)
        fc1s = [getattr(getattr(b, "mlp", None), "fc1", None) for b in blocks]
        widths = {fc.out_features for fc in fc1s if isinstance(fc, nn.Linear)}
        if len(widths) == 1 and all(isinstance(fc, nn.Linear) for fc in fc1s) and "embed_dim" in found:
            found["mlp_ratio"] = widths.pop() / found["embed_dim"]  # non-uniform widths go to edits
    accepted = inspect.signature(type(model).__init__).parameters
    return {k: v for k, v in found.items() if k in accepted}


def _spec_of(model: nn.Module) -> tuple[str, dict[str, Any]]:
    if callable(getattr(model, "arch_spec", None)):
        spec = model.arch_spec()
        if not isinstance(spec, dict) or not isinstance(spec.get("factory"), str):
            raise DistilkitError(f"{type(model).__name__}.arch_spec() must return {{'factory': str, 'config': dict}}")
        return spec["factory"], dict(spec.get("config") or {})
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if type(model).__module__.startswith("timm.") and isinstance(cfg, dict) and cfg.get("architecture"):
        return "timm", {"architecture": cfg["architecture"], "kwargs": _timm_kwargs(model)}
    raise DistilkitError(
        f"cannot describe the architecture of {type(model).__name__}: give save(..., arch={{'factory': ..., "
        f"'config': ...}}) with a registered factory, or add an arch_spec() method"
    )


# -- structural edits --------------------------------------------------------------------------
def _simple(value: Any) -> bool:
    if isinstance(value, _SCALARS):
        return True
    return isinstance(value, (tuple, list)) and all(isinstance(v, _SCALARS) for v in value)


def _attrs(module: nn.Module) -> dict[str, Any]:
    return {k: v for k, v in vars(module).items() if not k.startswith("_") and k != "training" and _simple(v)}


def _tensors(module: nn.Module) -> Iterator[tuple[str, str, torch.Tensor | None]]:
    for name, value in module._parameters.items():
        yield "param", name, value
    for name, value in module._buffers.items():
        if name not in module._non_persistent_buffers_set:
            yield "buffer", name, value


def _shape(value: torch.Tensor | None) -> list[int] | None:
    return None if value is None else list(value.shape)


def _apply(ref: nn.Module, edit: dict[str, Any], where: str) -> None:
    """Apply one edit to `ref` in place."""
    try:
        target = ref.get_submodule(edit["path"]) if edit["path"] else ref
    except AttributeError:
        raise DistilkitError(f"{where}: edit names missing module {edit['path']!r}") from None
    if edit["op"] == "truncate":
        if not isinstance(target, (nn.Sequential, nn.ModuleList)) or len(target) < edit["length"]:
            raise DistilkitError(f"{where}: cannot shorten {edit['path']!r} to {edit['length']} entries")
        for key in list(target._modules)[edit["length"]:]:
            del target._modules[key]
        return
    if edit["op"] == "replace":  # a parameter-free module of another kind (its attributes follow as a reshape)
        cls = _swappable().get(edit.get("class"))
        parent_path, _, child = edit["path"].rpartition(".")
        if cls is None or not child:
            raise DistilkitError(f"{where}: cannot replace {edit['path']!r} by {edit.get('class')!r}")
        setattr(ref.get_submodule(parent_path) if parent_path else ref, child, cls())
        return
    if edit["op"] == "keep":  # a named Sequential that lost entries keeps its other names
        keys = edit.get("keys")
        if not isinstance(target, nn.Sequential) or not isinstance(keys, list) or not set(keys) <= set(target._modules):
            raise DistilkitError(f"{where}: cannot keep entries {keys!r} of {edit['path']!r}")
        for key in [k for k in target._modules if k not in keys]:
            del target._modules[key]
        return
    if edit["op"] != "reshape":
        raise DistilkitError(f"{where}: unknown edit op {edit['op']!r}")
    for attr, value in edit.get("attrs", {}).items():
        old = getattr(target, attr, None)
        setattr(target, attr, tuple(value) if isinstance(old, tuple) and isinstance(value, list) else value)
    for name, spec in edit.get("tensors", {}).items():
        kind, shape = spec["kind"], spec["shape"]
        store = target._parameters if kind == "param" else target._buffers
        old = store.get(name)
        if shape is None:
            store[name] = None
            continue
        if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
            raise DistilkitError(f"{where}: bad shape {shape!r} for {edit['path'] or 'model'}.{name}")
        if old is None and name not in store and hasattr(target, name):
            raise DistilkitError(f"{where}: cannot rebuild {edit['path'] or 'model'}.{name}: the factory's module has a "
                                 "non-tensor attribute of that name (a constructor option not recovered)")
        like = old if old is not None else next(iter(t for t in ref.parameters()), torch.empty(0))
        fresh = torch.empty(shape, dtype=like.dtype, device=like.device)
        if kind == "param":
            grad = old.requires_grad if old is not None else True
            target.register_parameter(name, nn.Parameter(fresh, requires_grad=grad))
        else:
            target.register_buffer(name, fresh)


def _swappable() -> dict[str, type[nn.Module]]:
    """Parameter-free modules a saved model may hold where the factory builds another of them: a
    depth-cut timm ViT whose first kept block has a drop-path rate > 0 (DropPath where a fresh build of
    that depth has Identity). Only these classes are ever built from an arch.json name."""
    from timm.layers import DropPath

    return {"torch.nn.Identity": nn.Identity, "timm.layers.DropPath": DropPath}


def _swap(name: str, module: nn.Module, ref: nn.Module) -> dict[str, Any] | None:
    """The edit replacing `ref` by a module of `module`'s kind, where both are swappable; else None."""
    names = {cls: key for key, cls in _swappable().items()}
    if not name or type(module) not in names or type(ref) not in names:
        return None
    return {"op": "replace", "path": name, "class": names[type(module)]}


def _shortening(name: str, module: nn.Module, ref: nn.Module) -> dict[str, Any]:
    """The edit shortening container `ref` to `module`'s entries: the first N, or (names) those kept."""
    mine, theirs = list(module._modules), list(ref._modules)
    if len(mine) > len(theirs):
        raise DistilkitError(f"cannot save: {name} has {len(mine)} entries, the factory builds {len(theirs)}")
    if mine == theirs[: len(mine)]:
        return {"op": "truncate", "path": name, "length": len(mine)}
    if set(mine) <= set(theirs) and mine == [k for k in theirs if k in mine]:
        return {"op": "keep", "path": name, "keys": mine}
    raise DistilkitError(f"cannot save: the entries of {name} ({', '.join(mine)}) are not among the factory's")


def structural_edits(reference: nn.Module, model: nn.Module) -> list[dict[str, Any]]:
    """Edits turning a fresh factory build `reference` (modified in place) into `model`'s structure."""
    edits: list[dict[str, Any]] = []
    for name, module in model.named_modules():
        try:
            ref = reference.get_submodule(name) if name else reference
        except AttributeError:
            raise DistilkitError(f"cannot save: the factory's build of the model has no {name!r}") from None
        kind = getattr(type(module), "saved_as", type(module))  # runtime variants (PrepackedLinear) save as their base
        swap = _swap(name, module, ref) if type(ref) is not kind else None
        if swap is not None:
            edits.append(swap)
            _apply(reference, swap, "save")
            ref = reference.get_submodule(name)
        if type(ref) is not kind:
            raise DistilkitError(
                f"cannot save: {name or 'model'} is {type(module).__name__} but the factory builds {type(ref).__name__} "
                "(give save(..., arch={'factory': ..., 'config': ...}) with a factory that builds this model)"
            )
        if isinstance(module, (nn.Sequential, nn.ModuleList)) and len(module) != len(ref):
            edits.append(_shortening(name, module, ref))
            _apply(reference, edits[-1], "save")
        mine, theirs = _attrs(module), _attrs(ref)
        attrs = {k: v for k, v in mine.items() if k in theirs and theirs[k] != v}
        ref_tensors = {n: (kind, _shape(v)) for kind, n, v in _tensors(ref)}
        my_tensors = {n: (kind, _shape(v)) for kind, n, v in _tensors(module)}
        tensors = {n: {"kind": k, "shape": s} for n, (k, s) in my_tensors.items() if ref_tensors.get(n) != (k, s)}
        tensors.update({n: {"kind": k, "shape": None} for n, (k, _) in ref_tensors.items() if n not in my_tensors})
        if attrs or tensors:
            edits.append({"op": "reshape", "path": name, "attrs": attrs, "tensors": tensors})
            _apply(reference, edits[-1], "save")
    return edits


def _check_state(
    expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor], where: str, tied: dict[str, list[str]]
) -> None:
    missing = [k for k in expected if k not in got and not any(t in got for t in tied.get(k, []))]
    unexpected = [k for k in got if k not in expected]
    if missing:
        raise DistilkitError(f"{where}: missing tensor {missing[0]!r} ({len(missing)} missing in all)")
    if unexpected:
        raise DistilkitError(f"{where}: unexpected tensor {unexpected[0]!r} ({len(unexpected)} unexpected in all)")
    for key, tensor in got.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            want = tuple(expected[key].shape)
            raise DistilkitError(f"{where}: {key} has shape {tuple(tensor.shape)} but the rebuilt model expects {want}")


def _tied(model: nn.Module) -> dict[str, list[str]]:
    """{key: other keys sharing its storage} for tied weights (safetensors stores them once)."""
    groups: dict[tuple[int, int, tuple[int, ...]], list[str]] = {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        groups.setdefault(ident, []).append(key)
    return {k: [o for o in keys if o != k] for keys in groups.values() if len(keys) > 1 for k in keys}


# -- public API --------------------------------------------------------------------------------
def describe(model: nn.Module, arch: dict[str, Any] | None = None) -> dict[str, Any]:
    """The arch.json content for `model` (factory, config, structural edits, param count)."""
    net = unwrap(model)
    if arch is not None:
        if not isinstance(arch, dict) or not isinstance(arch.get("factory"), str) or not isinstance(arch.get("config") or {}, dict):
            raise DistilkitError(f"save(arch=...) needs {{'factory': str, 'config': dict}}, got {arch!r}"[:200])
        factory, config = arch["factory"], dict(arch.get("config") or {})
    else:
        factory, config = _spec_of(net)
    try:
        reference = _build(factory, config, "save", device="meta")
    except DistilkitError:
        reference = _build(factory, config, "save")
    edits = structural_edits(reference, net)
    mine = net.state_dict()
    try:
        _check_state(reference.state_dict(), mine, f"cannot save {type(net).__name__}", {})
    except DistilkitError as err:
        hint = "" if arch else f" (the rebuilt {factory!r} model differs: pass save(..., arch={{'factory', 'config'}}))"
        raise DistilkitError(f"{err}{hint}") from None
    params = {id(p): p.numel() for p in net.parameters()}
    spec = {"format": FORMAT, "factory": factory, "config": config, "edits": edits, "param_count": sum(params.values())}
    try:
        json.dumps(spec)
    except (TypeError, ValueError) as err:
        raise DistilkitError(f"cannot save: architecture config is not JSON-serialisable: {err}") from None
    return spec


def make_output_dir(path: str | os.PathLike[str], what: str | None = None) -> Path:
    """Create directory `path` (and its parents) if needed; a file in the way or a path that cannot be
    created is a one-line DistilkitError naming `what` (default: the path)."""
    out, what = Path(path), what or str(path)
    if out.exists() and not out.is_dir():
        raise DistilkitError(f"{what} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DistilkitError(f"{what}: cannot create the directory ({err.strerror})") from None
    return out


def save(model: nn.Module, path: str | os.PathLike[str], *, arch: dict[str, Any] | None = None) -> Path:
    """Write `path/model.safetensors` and `path/arch.json` (atomically); returns the directory.

    `arch` ({"factory", "config"}) overrides the automatic description (arch_spec() or timm).
    """
    from safetensors.torch import save_model

    spec = describe(model, arch)
    net = unwrap(model)
    hooked = next((name or "model" for name, m in net.named_modules() if m._forward_hooks or m._forward_pre_hooks), None)
    if hooked is not None:
        warnings.warn(f"save: {hooked} has forward hooks, which are not saved (an active progressive pruner? "
                      "finalize() it first to save the pruned model); the file holds the model without them",
                      stacklevel=2)
    out = make_output_dir(path)
    # Each file is replaced atomically, but not the pair: a crash between the two leaves new weights
    # beside the old arch.json. A shared id per save lets `load` tell such a pair from a real one.
    spec = {**spec, "save_id": uuid.uuid4().hex}
    with atomic_path(out / WEIGHTS) as tmp:
        save_model(net, tmp, metadata={"format": FORMAT, "save_id": spec["save_id"]})
    write_atomic(out / ARCH, json.dumps(spec, indent=2) + "\n")
    return out


def read_arch(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The validated arch.json of saved model directory `path`."""
    root = Path(path)
    if not root.exists():
        raise DistilkitError(f"{root} does not exist")
    if not root.is_dir():
        raise DistilkitError(f"{root} is not a model directory (expected {ARCH} and {WEIGHTS} inside)")
    arch_file = root / ARCH
    if not arch_file.is_file():
        raise DistilkitError(f"{root} has no {ARCH}")
    try:
        spec = json.loads(arch_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DistilkitError(f"{arch_file}: malformed JSON: {err}") from None
    found = spec.get("format") if isinstance(spec, dict) else None
    if found != FORMAT:
        raise DistilkitError(f"{arch_file}: not a {FORMAT} file (format={found!r})")
    if not isinstance(spec.get("factory"), str) or not isinstance(spec.get("config", {}), dict):
        raise DistilkitError(f"{arch_file}: needs a 'factory' string and a 'config' object")
    edits = spec.get("edits", [])
    if not isinstance(edits, list) or not all(isinstance(e, dict) and "op" in e and "path" in e for e in edits):
        raise DistilkitError(f"{arch_file}: 'edits' must be a list of {{'op', 'path', ...}} objects")
    return spec


def build(spec: dict[str, Any], where: str = "arch.json") -> nn.Module:
    """An untrained model with the structure `spec` (an arch.json dict) describes."""
    model = _build(spec["factory"], dict(spec.get("config") or {}), where)
    for edit in spec.get("edits", []):
        try:
            _apply(model, edit, where)
        except (KeyError, TypeError, ValueError) as err:
            raise DistilkitError(f"{where}: malformed edit {edit}: {err}") from None
    return model


def load(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model saved at `path` from its arch.json and load its weights strictly."""
    from safetensors import SafetensorError, safe_open

    root = Path(path)
    spec = read_arch(root)
    model = build(spec, str(root / ARCH))
    weights = root / WEIGHTS
    if not weights.is_file():
        raise DistilkitError(f"{root} has no {WEIGHTS}")
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as handle:
            weights_id = (handle.metadata() or {}).get("save_id")
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise DistilkitError(f"{weights}: unreadable safetensors file: {err}") from None
    if spec.get("save_id") != weights_id:  # files from before save ids have neither
        raise DistilkitError(f"{root}: {WEIGHTS} and {ARCH} were written by different saves (an interrupted "
                             "save?): save the model again")
    _check_state(model.state_dict(), state, str(weights), _tied(model))
    _restore_dtypes(model, state)
    model.load_state_dict(state, strict=False)
    return model.to(map_location)


def _restore_dtypes(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give every floating tensor the dtype it was saved in, before the values are copied in (the factory
    builds float32; a model may mix dtypes, e.g. a half-precision head, or be float64 throughout)."""
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for name, tensor in named:
        saved = state.get(name)
        if saved is not None and saved.is_floating_point() and tensor.is_floating_point() and saved.dtype != tensor.dtype:
            tensor.data = tensor.data.to(saved.dtype)
