"""Model builders an arch.json may name, and a bounded way to call them with a config read from a file.

Only registered builders are ever called: "timm" (a registered timm architecture, built without pretrained
weights), distilkit's own model families (they register themselves; `BUILTIN` names the module that does,
imported on first use) and whatever the program passes to `register_factory`. Configs are plain JSON data;
a build stops with `ModelTooLarge` once it creates more than `MAX_ELEMENTS` tensor elements or runs more
than `MAX_BUILD_OPS` tensor operations (raise them for bigger models), so a hostile file cannot make it
allocate or loop without end.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from distilkit.errors import DistilkitError

MAX_ELEMENTS = 2**32  # ~4.3e9 tensor elements (17 GB of float32): twice the largest timm model
MAX_BUILD_OPS = 20_000  # a 12-block ViT takes ~1,300 tensor operations to build, a 24-block ViT-L ~2,500
MAX_NESTING = 32  # lists/objects inside each other in a config or an arch.json

# name -> the module that registers it: imported on first use (never a module a file names)
BUILTIN = {"distilkit.trackers.mixformerv2:build_model_from_config": "distilkit.trackers.mixformerv2.model"}
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_CONSTRUCTORS = {
    torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.randint, torch.randperm,
    torch.arange, torch.linspace, torch.logspace, torch.eye, torch.empty_strided, torch.tensor,
    torch.Tensor.new_empty, torch.Tensor.new_zeros, torch.Tensor.new_ones, torch.Tensor.new_full,
}
# kwargs of timm.create_model / build_model_with_cfg beyond the architecture's own: they load weights,
# read or download files, or build something other than the model itself
_TIMM_EXTRA = {"pruned", "features_only", "out_indices", "feature_cls", "feature_cfg"}
_TIMM_IO_WORDS = re.compile(r"pretrained|checkpoint|cache|download|file|url|hub|(^|_)(dir|folder)$|^path$|(?<!drop)_path$")


class ModelTooLarge(DistilkitError):
    """A model build went past MAX_ELEMENTS or MAX_BUILD_OPS (stopped before allocating the excess)."""


def too_large(where: str, what: str) -> ModelTooLarge:
    """The error for a build past the limits, `what` saying which."""
    return ModelTooLarge(f"{where}: refusing to build the model: {what} (a damaged or hostile file? raise "
                         "distilkit.factories.MAX_ELEMENTS / MAX_BUILD_OPS for a genuinely bigger model)")


def register_factory(name: str, fn: Callable[..., nn.Module]) -> None:
    """Allow arch.json files to name builder `name`: `load` calls fn(**config), or fn(config) when it
    takes a `config` parameter, with the file's config (plain JSON data)."""
    if not isinstance(name, str) or not name.strip():
        raise DistilkitError(f"register_factory: the name must be a non-empty string, got {name!r}")
    if not callable(fn):
        raise DistilkitError(f"register_factory({name!r}): {fn!r} is not callable")
    _REGISTRY[name] = fn


def resolve(name: str, where: str) -> Callable[..., nn.Module]:
    """The builder registered as `name` (a built-in family's module is imported to register it)."""
    if isinstance(name, str) and name not in _REGISTRY and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if isinstance(name, str) and name in _REGISTRY:
        return _REGISTRY[name]
    known = ", ".join(repr(n) for n in sorted({*_REGISTRY, *BUILTIN}))
    raise DistilkitError(f"{where}: unknown factory {name!r}; only registered model builders are called "
                         f"({known}; more with distilkit.io.register_factory)"[:400])


def plain_data(value: Any, what: str) -> Any:
    """`value` as plain JSON data (tuples become lists): anything else, NaN/inf or nesting deeper than
    MAX_NESTING is a DistilkitError."""
    try:
        data = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as err:
        raise DistilkitError(f"{what} must be plain JSON data (numbers, strings, lists, objects): {one_line(err)}") from None
    check_nesting(data, what)
    return data


def check_nesting(data: Any, what: str) -> None:
    """Refuse JSON data nested deeper than MAX_NESTING (checked without recursion)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > MAX_NESTING:
                    raise DistilkitError(f"{what} is nested more than {MAX_NESTING} levels deep")
                stack.append((child, depth + 1))


def one_line(err: BaseException | str, limit: int = 300) -> str:
    """An error's text on one line, shortened: messages end up in one-line CLI errors."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Budget(TorchFunctionMode):
    """Counts the tensor operations and created elements of a build, on any device, and stops it (before
    the allocation) once past MAX_BUILD_OPS / MAX_ELEMENTS; once tripped every later operation fails too."""

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where, self.ops, self.created = where, 0, 0
        self.error: ModelTooLarge | None = None

    def _trip(self, what: str) -> None:
        self.error = self.error or too_large(self.where, what)
        raise self.error

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if self.error is not None:
            raise self.error
        self.ops += 1 + _python_items(func, args, kwargs)  # iterating a tensor makes one Python object per row
        if self.ops > MAX_BUILD_OPS:
            self._trip(f"more than {MAX_BUILD_OPS:,} tensor operations")
        made = _meta_size(func, args, kwargs) if func in _CONSTRUCTORS else None  # before allocating
        if made is not None:
            self._count(made)
        out = func(*args, **kwargs)
        if made is None and func in _CONSTRUCTORS and isinstance(out, torch.Tensor):
            self._count(out.numel())
        if isinstance(out, torch.Tensor) and out.numel() > MAX_ELEMENTS:
            self._trip(f"a tensor of {out.numel():,} elements")
        if isinstance(out, (tuple, list)):
            self.ops += len(out)
        return out

    def _count(self, made: int) -> None:
        self.created += made
        if self.created > MAX_ELEMENTS:
            self._trip(f"more than {MAX_ELEMENTS:,} tensor elements")


def _meta_size(func: Any, args: tuple, kwargs: dict) -> int | None:
    """The number of elements constructor `func` would create, from a meta-device call (None if unknown)."""
    if "out" in kwargs:
        return None
    try:
        return func(*args, **{**kwargs, "device": "meta"}).numel()
    except Exception:  # a call meta does not support: counted once made
        return None


def _python_items(func: Any, args: tuple, kwargs: dict) -> int:
    """How many Python objects `unbind` (tensor iteration) or `tolist` is about to make."""
    name = getattr(func, "__name__", "")
    tensor = args[0] if args and isinstance(args[0], torch.Tensor) else None
    if tensor is None or name not in ("unbind", "tolist"):
        return 0
    if name == "tolist" or tensor.dim() == 0:
        return tensor.numel()
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    return tensor.shape[dim] if isinstance(dim, int) and -tensor.dim() <= dim < tensor.dim() else tensor.numel()


@contextmanager
def bounded(where: str) -> Iterator[_Budget]:
    """Run tensor code within MAX_BUILD_OPS / MAX_ELEMENTS (ModelTooLarge otherwise), e.g. a model build."""
    budget = _Budget(where)
    with budget:
        yield budget
    if budget.error is not None:  # tripped, and the code caught the error
        raise budget.error


def elements(model: nn.Module) -> int:
    """Elements of `model`'s parameters and buffers (shared ones once)."""
    seen = {id(t): t.numel() for t in [*model.parameters(), *model.buffers()]}
    return sum(seen.values())


def construct(name: str, config: dict[str, Any], where: str, device: str | torch.device = "cpu") -> nn.Module:
    """The model that registered builder `name` makes from `config` (plain data) on `device`, within the limits."""
    fn = resolve(name, where)
    if not isinstance(config, dict):
        raise DistilkitError(f"{where}: the config of factory {name!r} must be an object, got {type(config).__name__}")
    config = plain_data(config, f"{where}: config")
    params = _parameters(fn)
    one_arg = params is not None and "config" in params and "config" not in config
    if params is not None and not one_arg and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(config) - {k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)})
        if unknown:
            raise DistilkitError(f"{where}: factory {name!r} takes no config key(s) {', '.join(map(repr, unknown))}")
    try:
        with torch.device(device), bounded(where):
            model = fn(config) if one_arg else fn(**config)
    except ModelTooLarge:
        raise
    except Exception as err:  # the builder rejected the config
        raise DistilkitError(f"{where}: factory {name!r} cannot build this config: {one_line(err)} "
                             f"(config: {one_line(config, 120)})") from None
    if not isinstance(model, nn.Module):
        raise DistilkitError(f"{where}: factory {name!r} returned {type(model).__name__}, not an nn.Module")
    return model


def _parameters(fn: Callable[..., Any]) -> dict[str, inspect.Parameter] | None:
    try:
        return dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None


def build_timm(architecture: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """timm.create_model(architecture, pretrained=False, **kwargs) for a registered timm architecture name
    (no hub/local-dir prefix, no pretrained tag) and constructor kwargs that load, read or download nothing."""
    import timm
    from timm.models import build_model_with_cfg

    if not isinstance(architecture, str) or not re.fullmatch(r"[A-Za-z0-9_]+", architecture) or not timm.is_model(architecture):
        raise DistilkitError(f"timm architecture {architecture!r} is not a registered timm model name "
                             "(prefixes such as hf-hub: and pretrained tags are not accepted)"[:300])
    if not isinstance(kwargs, (dict, type(None))):
        raise DistilkitError(f"timm kwargs must be an object of constructor arguments, got {type(kwargs).__name__}")
    kwargs = dict(kwargs or {})
    reserved = {*inspect.signature(timm.create_model).parameters, *inspect.signature(build_model_with_cfg).parameters,
                *_TIMM_EXTRA} - {"model_name", "model_cls", "variant", "kwargs"}
    refused = sorted(k for k in kwargs if k in reserved or _TIMM_IO_WORDS.search(k.lower()))
    if refused:
        raise DistilkitError(f"timm kwargs {', '.join(map(repr, refused))} are not accepted from a file "
                             "(they load weights, read or download files, or change what is built)")
    return timm.create_model(architecture, pretrained=False, **kwargs)


register_factory("timm", build_timm)
