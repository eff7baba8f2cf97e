"""Save / load models as `model.safetensors` + `arch.json`: rebuilt by a registered builder, never unpickled.

arch.json = {"format", "factory", "config", "edits", "param_count", "save_id"}. The factory is a name
registered with `register_factory` (distilkit.factories): "timm" (config: a registered timm architecture
name + constructor kwargs, built without pretrained weights), distilkit's own families such as
"distilkit.trackers.mixformerv2:build_model_from_config" (a model's `arch_spec()`), or the program's own.
Nothing else a folder names is imported or called, configs are plain JSON data, and a build stops before
allocating past distilkit.factories.MAX_ELEMENTS, so loading a downloaded folder runs nothing it chooses.
`edits` is a generic structural diff between the factory's fresh build and the saved model (shortened
block containers, Linear / Conv / LayerNorm … with new shapes, changed int/float attributes), so depth-
and width-pruned models rebuild without the code that pruned them.

The weights file's metadata holds the save id (both files come from one save) and the SHA-256 of
arch.json's content: `load` warns when arch.json was edited after the save, and when weights hold NaN/inf.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distilkit import factories
from distilkit.atomic import atomic_path, write_atomic
from distilkit.blocks import unwrap
from distilkit.errors import DistilkitError
from distilkit.factories import (
    ModelTooLarge, bounded, check_nesting, construct, elements, one_line, plain_data, too_large,
)
from distilkit.factories import register_factory  # noqa: F401 - public here too: distilkit.io.register_factory

FORMAT = "distilkit-arch/1"
WEIGHTS = "model.safetensors"
ARCH = "arch.json"
MAX_ARCH_BYTES = 64 << 20  # an arch.json of a 10,000-module model is a few MB
_SCALARS = (bool, int, float, str, type(None))
_EDIT_OPS = ("truncate", "keep", "replace", "reshape")


def _fresh(factory: str, config: dict[str, Any], where: str) -> nn.Module:
    """The factory's build on the meta device (nothing allocated), or a real one, within the limits, for a
    builder that cannot run there: the reference `describe` compares a model with."""
    try:
        return construct(factory, config, where, device="meta")
    except ModelTooLarge:
        raise
    except DistilkitError:
        return construct(factory, config, where)


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


def _edit_problem(edit: Any) -> str | None:
    """What makes `edit` other than one of the edits `structural_edits` writes (None: nothing)."""
    if not isinstance(edit, dict) or edit.get("op") not in _EDIT_OPS or not isinstance(edit.get("path"), str):
        return f"needs an 'op' ({', '.join(_EDIT_OPS)}) and a 'path' string"
    if edit["op"] == "truncate":
        length = edit.get("length")
        ok = isinstance(length, int) and not isinstance(length, bool) and length >= 0
        return None if ok else "'length' must be an int >= 0"
    if edit["op"] == "keep":
        keys = edit.get("keys")
        return None if isinstance(keys, list) and all(isinstance(k, str) for k in keys) else "'keys' must be a list of names"
    if edit["op"] == "replace":
        return None if isinstance(edit.get("class"), str) else "'class' must be a string"
    attrs, tensors = edit.get("attrs", {}), edit.get("tensors", {})
    if not isinstance(attrs, dict) or not all(_simple(v) for v in attrs.values()):
        return "'attrs' must map attribute names to numbers, strings, booleans or lists of them"
    if not isinstance(tensors, dict):
        return "'tensors' must map tensor names to {'kind', 'shape'}"
    for name, spec in tensors.items():
        if not isinstance(spec, dict) or spec.get("kind") not in ("param", "buffer") or "shape" not in spec:
            return f"tensor {name!r} needs 'kind' ('param' or 'buffer') and 'shape'"
        shape = spec["shape"]
        if shape is not None and not (isinstance(shape, list)
                                      and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
            return f"bad shape {shape!r} for {edit['path'] or 'model'}.{name}"
        if shape is not None and math.prod(shape) > factories.MAX_ELEMENTS:
            return (f"shape {one_line(shape, 80)} for {edit['path'] or 'model'}.{name} has more than "
                    f"distilkit.factories.MAX_ELEMENTS = {factories.MAX_ELEMENTS:,} elements")
    return None


def _check_edits(edits: Any, where: str) -> None:
    """Refuse, before building anything, edits that are not of the shapes `structural_edits` writes."""
    if not isinstance(edits, list):
        raise DistilkitError(f"{where}: 'edits' must be a list of {{'op', 'path', ...}} objects")
    for i, edit in enumerate(edits):
        problem = _edit_problem(edit)
        if problem is not None:
            raise DistilkitError(f"{where}: edit {i}: {problem}")


def _apply(ref: nn.Module, edit: dict[str, Any], where: str) -> None:
    """Apply one edit (checked by `_edit_problem`) to `ref` in place."""
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
        cls = _swappable().get(edit["class"])
        parent_path, _, child = edit["path"].rpartition(".")
        if cls is None or not child:
            raise DistilkitError(f"{where}: cannot replace {edit['path']!r} by {edit['class']!r}")
        setattr(ref.get_submodule(parent_path) if parent_path else ref, child, cls())
        return
    if edit["op"] == "keep":  # a named Sequential that lost entries keeps its other names
        keys = edit["keys"]
        if not isinstance(target, nn.Sequential) or not set(keys) <= set(target._modules):
            raise DistilkitError(f"{where}: cannot keep entries {keys!r} of {edit['path']!r}")
        for key in [k for k in target._modules if k not in keys]:
            del target._modules[key]
        return
    known = _attrs(target)  # only the plain attributes the factory's module has: nothing else is set
    for attr, value in edit.get("attrs", {}).items():
        if attr not in known:
            raise DistilkitError(f"{where}: {type(target).__name__} {edit['path'] or 'model'} has no plain attribute {attr!r} to "
                                 "set")
        setattr(target, attr, tuple(value) if isinstance(known[attr], tuple) and isinstance(value, list) else value)
    for name, spec in edit.get("tensors", {}).items():
        kind, shape = spec["kind"], spec["shape"]
        store = target._parameters if kind == "param" else target._buffers
        old = store.get(name)
        if shape is None:
            store[name] = None
            continue
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
    expected: dict[str, tuple[int, ...]], got: dict[str, tuple[int, ...]], where: str, tied: dict[str, list[str]]
) -> None:
    """Refuse a state (tensor shapes by key) other than the rebuilt model's (tied copies may be left out)."""
    missing = [k for k in expected if k not in got and not any(t in got for t in tied.get(k, []))]
    unexpected = [k for k in got if k not in expected]
    if missing:
        raise DistilkitError(f"{where}: missing tensor {missing[0]!r} ({len(missing)} missing in all)")
    if unexpected:
        raise DistilkitError(f"{where}: unexpected tensor {unexpected[0]!r} ({len(unexpected)} unexpected in all)")
    for key, shape in got.items():
        if tuple(shape) != tuple(expected[key]):
            raise DistilkitError(f"{where}: {key} has shape {tuple(shape)} but the rebuilt model expects {tuple(expected[key])}")


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(tensor.shape) for key, tensor in state.items()}


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
        if (not isinstance(arch, dict) or not isinstance(arch.get("factory"), str)
                or not isinstance(arch.get("config") or {}, dict)):
            raise DistilkitError(f"save(arch=...) needs {{'factory': str, 'config': dict}}, got {arch!r}"[:200])
        factory, config = arch["factory"], dict(arch.get("config") or {})
    else:
        factory, config = _spec_of(net)
    config = plain_data(config, "cannot save: the architecture config")  # as `load` will read it back
    reference = _fresh(factory, config, "save")
    edits = structural_edits(reference, net)
    mine = net.state_dict()
    try:
        _check_state(_shapes(reference.state_dict()), _shapes(mine), f"cannot save {type(net).__name__}", {})
    except DistilkitError as err:
        hint = "" if arch else f" (the rebuilt {factory!r} model differs: pass save(..., arch={{'factory', 'config'}}))"
        raise DistilkitError(f"{err}{hint}") from None
    params = {id(p): p.numel() for p in net.parameters()}
    spec = {"format": FORMAT, "factory": factory, "config": config, "edits": edits, "param_count": sum(params.values())}
    return plain_data(spec, "cannot save: the architecture description")  # e.g. an attribute set to NaN


def arch_hash(spec: dict[str, Any]) -> str:
    """SHA-256 of arch.json content `spec` in canonical form (sorted keys, no spaces): stored in the weights
    file's metadata, so an arch.json edited after the save is noticed however it is re-formatted."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
        save_model(net, tmp, metadata={"format": FORMAT, "save_id": spec["save_id"], "arch_sha256": arch_hash(spec)})
    write_atomic(out / ARCH, json.dumps(spec, indent=2) + "\n")
    return out


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


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
        with open(arch_file, "rb") as file:
            raw = file.read(MAX_ARCH_BYTES + 1)  # at most that, whatever the file claims to be
        if len(raw) > MAX_ARCH_BYTES:
            raise DistilkitError(f"{arch_file}: larger than {MAX_ARCH_BYTES:,} bytes: not an arch.json distilkit wrote")
        spec = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except DistilkitError:  # a ValueError: not to be reported as malformed JSON below
        raise
    except OSError as err:
        raise DistilkitError(f"{arch_file}: cannot read it ({err.strerror or one_line(err)})") from None
    except RecursionError:
        raise DistilkitError(f"{arch_file}: malformed JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError, NaN/Infinity, a number of 5,000 digits
        raise DistilkitError(f"{arch_file}: malformed JSON: {one_line(err)}") from None
    check_nesting(spec, str(arch_file))
    found = spec.get("format") if isinstance(spec, dict) else None
    if found != FORMAT:
        raise DistilkitError(f"{arch_file}: not a {FORMAT} file (format={one_line(repr(found), 80)})")
    _check_spec(spec, str(arch_file))
    return spec


def _check_spec(spec: dict[str, Any], where: str) -> None:
    if not isinstance(spec.get("factory"), str) or not isinstance(spec.get("config", {}), dict):
        raise DistilkitError(f"{where}: needs a 'factory' string and a 'config' object")
    _check_edits(spec.get("edits", []), where)


def build(spec: dict[str, Any], where: str = "arch.json") -> nn.Module:
    """An untrained model with the structure `spec` (an arch.json dict) describes. It is built on the meta
    device first, so a spec implying more than distilkit.factories.MAX_ELEMENTS elements allocates nothing."""
    if not isinstance(spec, dict):
        raise DistilkitError(f"{where}: an arch spec must be an object, got {type(spec).__name__}")
    _check_spec(spec, where)
    try:
        _assemble(spec, where, "meta")
    except ModelTooLarge:
        raise
    except DistilkitError:
        pass  # a builder that cannot run on meta: the real build below is bounded as it goes
    return _assemble(spec, where, "cpu")


def _assemble(spec: dict[str, Any], where: str, device: str) -> nn.Module:
    """The factory's build with `spec`'s edits applied, on `device`, refused past MAX_ELEMENTS."""
    model = construct(spec["factory"], dict(spec.get("config") or {}), where, device)
    with bounded(where):
        for i, edit in enumerate(spec.get("edits", [])):
            try:
                _apply(model, edit, where)
            except DistilkitError:  # already says what and where
                raise
            except (KeyError, TypeError, ValueError, RuntimeError) as err:
                raise DistilkitError(f"{where}: edit {i} cannot be applied: {one_line(err)}") from None
    size = elements(model)
    if size > factories.MAX_ELEMENTS:
        raise too_large(where, f"{size:,} tensor elements, more than {factories.MAX_ELEMENTS:,}")
    return model


def load(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model saved at `path` from its arch.json and load its weights strictly.

    Warns (UserWarning) when arch.json was edited after the save, or when weights hold NaN/inf."""
    from safetensors import SafetensorError, safe_open

    root = Path(path)
    spec = read_arch(root)
    weights = root / WEIGHTS
    if not weights.is_file():
        raise DistilkitError(f"{root} has no {WEIGHTS}")
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            if spec.get("save_id") != metadata.get("save_id"):  # files from before save ids have neither
                raise DistilkitError(f"{root}: {WEIGHTS} and {ARCH} were written by different saves (an interrupted "
                                     "save?): save the model again")
            model = build(spec, str(root / ARCH))
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
            _check_state(_shapes(model.state_dict()), shapes, str(weights), _tied(model))  # before reading any data
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except DistilkitError:  # a ValueError, but not an unreadable file
        raise
    except (SafetensorError, OSError, ValueError) as err:
        raise DistilkitError(f"{weights}: unreadable safetensors file: {one_line(err)}") from None
    _restore_dtypes(model, state)
    model.load_state_dict(state, strict=False)
    saved_hash = metadata.get("arch_sha256")
    if saved_hash is not None and saved_hash != arch_hash(spec):  # folders from before the hash have none
        warnings.warn(f"{root / ARCH}: edited after the model was saved (its content differs from the hash in "
                      f"{WEIGHTS}); the model is built as the edited file says", stacklevel=2)
    _warn_non_finite(state, weights)
    return model.to(map_location)


def _warn_non_finite(state: dict[str, torch.Tensor], weights: Path) -> None:
    """Warn when saved tensors hold NaN or inf (a diverged training run, a damaged file)."""
    bad = {key: int((~torch.isfinite(t)).sum()) for key, t in state.items() if t.is_floating_point() or t.is_complex()}
    bad = {key: n for key, n in bad.items() if n}
    if bad:
        key, count = next(iter(bad.items()))
        warnings.warn(f"{weights}: {len(bad)} tensor(s) hold NaN or inf values, first {key!r} ({count:,} of "
                      f"{state[key].numel():,} values)", stacklevel=3)


def _restore_dtypes(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give every floating tensor the dtype it was saved in, before the values are copied in (the factory
    builds float32; a model may mix dtypes, e.g. a half-precision head, or be float64 throughout)."""
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for name, tensor in named:
        saved = state.get(name)
        if saved is not None and saved.is_floating_point() and tensor.is_floating_point() and saved.dtype != tensor.dtype:
            tensor.data = tensor.data.to(saved.dtype)
