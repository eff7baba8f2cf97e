"""Training-state checkpoints: one safetensors file (all tensors) whose metadata holds the rest as JSON.

Nested state (model, optimizer, pruner, RNG, counters) is flattened: tensors and numpy arrays go
to the tensor table under their key path, everything else stays in a JSON tree with placeholders.
A single file written to a temp name and `os.replace`d is atomic, and nothing is ever unpickled.
"""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from distilkit.atomic import atomic_path
from distilkit.errors import DistilkitError

_TENSOR, _ARRAY, _TUPLE, _ITEMS = "__tensor__", "__ndarray__", "__tuple__", "__items__"


def _flatten(obj: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().to("cpu").contiguous()
        return {_TENSOR: key}
    if isinstance(obj, np.ndarray):
        wide = np.int64 if obj.dtype.kind in "ui" else np.float64  # safe, exact carriers for RNG keys etc.
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj, dtype=wide))
        return {_ARRAY: key, "dtype": str(obj.dtype)}
    if isinstance(obj, tuple):
        return {_TUPLE: [_flatten(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_flatten(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not any(k.startswith("__") and k.endswith("__") for k in obj):
            return {k: _flatten(v, f"{key}.{k}", tensors) for k, v in obj.items()}
        return {_ITEMS: [[k, _flatten(v, f"{key}.{k}", tensors)] for k, v in obj.items()]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    raise DistilkitError(f"checkpoint: cannot store {type(obj).__name__} at {key!r} (tensors, arrays and JSON values only)")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return tensors[obj[_TENSOR]]
        if _ARRAY in obj:
            return tensors[obj[_ARRAY]].numpy().astype(obj["dtype"])
        if _TUPLE in obj:
            return tuple(_unflatten(v, tensors) for v in obj[_TUPLE])
        if _ITEMS in obj:
            return {k: _unflatten(v, tensors) for k, v in obj[_ITEMS]}
        return {k: _unflatten(v, tensors) for k, v in obj.items()}
    return obj


def save_state(path: str, state: dict[str, Any]) -> None:
    """Write nested `state` atomically to `path` (a .safetensors file)."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _flatten(state, "s", tensors)
    with atomic_path(path) as tmp:
        # safetensors refuses tensors sharing storage; clone those that do.
        seen: set[int] = set()
        for k, t in tensors.items():
            ptr = t.untyped_storage().data_ptr() if t.numel() else -1
            if ptr in seen:
                tensors[k] = t.clone()
            elif ptr != -1:
                seen.add(ptr)
        save_file(tensors, tmp, metadata={"distilkit_state": json.dumps(tree)})


def load_state(path: str) -> dict[str, Any]:
    """Inverse of `save_state`; a truncated or foreign file raises DistilkitError."""
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises several types for corrupt files
        raise DistilkitError(f"cannot read checkpoint {path}: {err}") from None
    if "distilkit_state" not in meta:
        raise DistilkitError(f"{path} is not a distilkit training checkpoint (no state metadata)")
    try:
        return _unflatten(json.loads(meta["distilkit_state"]), tensors)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
        raise DistilkitError(f"{path}: damaged checkpoint metadata ({type(err).__name__}: {err})") from None


def rng_state() -> dict[str, Any]:
    """RNG states of python, numpy and torch (CPU and every CUDA device)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured (lists came back from JSON where tuples were)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(tuple(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
