"""Find a model's block container by dotted path and edit it in place (shared by the depth and width tools)."""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from torch import nn

from distilkit.checks import as_int
from distilkit.errors import DistilkitError

_PARALLEL_WRAPPERS = (nn.parallel.DistributedDataParallel, nn.DataParallel)


def unwrap(model: nn.Module) -> nn.Module:
    """The module DDP / DataParallel / `torch.compile` wrap (hooks, edits and saving go on it), else
    `model` itself."""
    # torch.compile's wrapper can only exist once dynamo is imported; importing it here would cost ~1 s
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    compiled = getattr(eval_frame, "OptimizedModule", ())
    while True:
        if isinstance(model, _PARALLEL_WRAPPERS):
            model = model.module
        elif compiled and isinstance(model, compiled):
            model = model._orig_mod
        else:
            return model


def resolve_blocks(model: nn.Module, path: str = "blocks") -> nn.Sequential | nn.ModuleList:
    """The nn.Sequential / nn.ModuleList at dotted attribute `path` (e.g. "backbone.blocks")."""
    if not isinstance(path, str):
        raise DistilkitError(f"blocks must be a dotted attribute path such as 'blocks', got {path!r}")
    target: object = unwrap(model)
    walked: list[str] = []
    for part in path.split("."):
        walked.append(part)
        if not part or not hasattr(target, part):
            raise DistilkitError(
                f"{type(unwrap(model)).__name__} has no attribute {'.'.join(walked)!r} (blocks={path!r})"
            )
        target = getattr(target, part)
    if not isinstance(target, (nn.Sequential, nn.ModuleList)):
        raise DistilkitError(
            f"blocks={path!r} is a {type(target).__name__}, not an nn.Sequential or nn.ModuleList"
        )
    if len(target) == 0:
        raise DistilkitError(f"blocks={path!r} is empty")
    return target


def check_layers(depth: int, layers: Sequence[int], what: str = "remove") -> list[int]:
    """Validate 0-based layer indices (ints, in range, no duplicates); return them sorted."""
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
        raise DistilkitError(f"{what}: expected a list of layer indices, got {layers!r}")
    out: list[int] = []
    for item in layers:
        layer = as_int(item, f"{what}: layer index")
        if not 0 <= layer < depth:
            raise DistilkitError(f"{what}: layer {layer} is out of range for depth {depth} (0..{depth - 1})")
        out.append(layer)
    if len(set(out)) != len(out):
        dupes = sorted({x for x in out if out.count(x) > 1})
        raise DistilkitError(f"{what}: duplicate layer indices {dupes}")
    return sorted(out)


def drop_entries(container: nn.Sequential | nn.ModuleList, remove: Sequence[int]) -> None:
    """Delete entries in place, renumbering "0".."n-1" keys (custom Sequential names are kept)."""
    gone = set(remove)
    names = list(container._modules)
    kept = [(name, mod) for i, (name, mod) in enumerate(container._modules.items()) if i not in gone]
    if names == [str(i) for i in range(len(names))]:
        kept = [(str(i), mod) for i, (_, mod) in enumerate(kept)]
    container._modules = OrderedDict(kept)


def depth_attributes(model: nn.Module, attrs: str | Sequence[str], depth: int) -> list[tuple[Any, str]]:
    """(owner, name) of each dotted attribute path in `attrs` (e.g. "depth", "config.num_hidden_layers"),
    each an int equal to `depth`: checked before blocks are removed, so a wrong name edits nothing."""
    paths = [attrs] if isinstance(attrs, str) else attrs
    if not isinstance(paths, Iterable) or not all(isinstance(p, str) and p for p in paths):
        raise DistilkitError(f"depth_attrs must be dotted attribute paths such as 'depth', got {attrs!r}")
    targets = []
    for path in paths:
        *parents, name = path.split(".")
        owner: Any = unwrap(model)
        for part in parents:
            owner = getattr(owner, part, None)
        value = getattr(owner, name, None)
        if isinstance(value, bool) or not isinstance(value, int):
            raise DistilkitError(f"depth_attrs: {type(unwrap(model)).__name__}.{path} is not an int attribute "
                                 f"(got {type(value).__name__})")
        if value != depth:
            raise DistilkitError(f"depth_attrs: {path} is {value}, not the depth {depth} of the blocks")
        targets.append((owner, name))
    return targets


def update_depth_records(model: nn.Module, path: str, kept: Sequence[int],
                         attributes: Sequence[tuple[Any, str]] = ()) -> None:
    """After blocks of the container at `path` were removed: set each (owner, name) of `attributes`
    (from `depth_attributes`) to the new depth, and renumber timm's `feature_info` entries under `path`.
    Nothing else is touched: a model's other depth records are named by its user, never guessed."""
    model = unwrap(model)
    for owner, name in attributes:
        setattr(owner, name, len(kept))
    info = getattr(model, "feature_info", None)
    if isinstance(info, list) and all(isinstance(x, dict) for x in info):
        new_index = {str(o): str(n) for n, o in enumerate(kept)}
        updated = []
        for entry in info:
            head, _, tail = str(entry.get("module", "")).rpartition(".")
            if head != path:
                updated.append(entry)
            elif tail in new_index:
                updated.append({**entry, "module": f"{path}.{new_index[tail]}"})
        model.feature_info = updated
