"""Load the official MixFormerV2 / MixViT `.pth.tar` checkpoints into distilkit models."""

from __future__ import annotations

import logging
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from distilkit.errors import DistilkitError

log = logging.getLogger(__name__)

# The official training wrappers nest the weights under one of these keys.
_CONTAINER_KEYS = ("net", "state_dict", "model")
# Prefixes added by DataParallel / DistributedDataParallel.
_STRIP_PREFIXES = ("module.",)
# Fixed or derived entries: absent from some official files (convert_ckpt drops the sin-cos tables)
# and rebuilt identically here, so their absence is not reported as missing.
_REBUILT_SUFFIXES = ("pos_embed_t", "pos_embed_s", "num_batches_tracked")


@dataclass
class LoadReport:
    """What load_official_checkpoint did: counts and the keys it could not match."""

    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    rebuilt: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise DistilkitError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise DistilkitError(f"checkpoint {path} is an empty file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's message suggests weights_only=False: never here
        raise DistilkitError(f"cannot read checkpoint {path}: not a file of plain tensors (corrupt, or it holds pickled "
                             "objects, which are never loaded because that could run code from the file)") from exc
    except Exception as exc:  # torch raises many types for corrupt files
        first = (re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines() or ["(no message)"])[0]  # one plain line
        raise DistilkitError(f"cannot read checkpoint {path}: {type(exc).__name__}: {first}") from exc
    for key in _CONTAINER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DistilkitError(f"{path} does not hold a state dict of tensors (looked under {', '.join(_CONTAINER_KEYS)})")
    return obj


def map_official_key(key: str) -> str:
    """Official key → distilkit key. Module names mirror the official ones, so only wrapper
    prefixes are removed (the official score head `score_head.layers.{0.0,1}` maps unchanged)."""
    for prefix in _STRIP_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def load_official_checkpoint(model: nn.Module, path: str | Path, strict: bool = False) -> LoadReport:
    """Copy official weights into `model` (a MixFormerV2). Shape mismatch → DistilkitError naming the key,
    and so is a file none of whose tensors matches (another model's weights); with strict=True any
    missing or unexpected key is an error too."""
    path = Path(path)
    source = {map_official_key(k): v for k, v in _read_state_dict(path).items()}
    target = model.state_dict()
    missing, rebuilt = [], []
    for key in target:
        if key not in source:
            (rebuilt if key.endswith(_REBUILT_SUFFIXES) else missing).append(key)
    unexpected = sorted(k for k in source if k not in target)
    for key, value in source.items():
        if key in target and tuple(value.shape) != tuple(target[key].shape):
            raise DistilkitError(
                f"{path}: shape mismatch for {key}: checkpoint {tuple(value.shape)} vs model {tuple(target[key].shape)}"
            )
    report = LoadReport(loaded=sum(k in target for k in source), missing=missing, unexpected=unexpected, rebuilt=rebuilt)
    if report.loaded == 0:
        raise DistilkitError(f"{path}: none of its {len(source)} tensors matches a key of the model "
                             f"(first: {unexpected[:3]}); is it a MixFormerV2 checkpoint?")
    if strict and not report.ok:
        raise DistilkitError(
            f"{path}: {len(missing)} missing key(s) (first: {missing[:3]}), "
            f"{len(unexpected)} unexpected key(s) (first: {unexpected[:3]})"
        )
    model.load_state_dict({k: v for k, v in source.items() if k in target}, strict=False)
    log.info("loaded %d tensors from %s; missing %d, unexpected %d", report.loaded, path, len(missing), len(unexpected))
    if missing:
        log.warning("missing keys (kept initialised): %s", ", ".join(missing[:10]))
    if unexpected:
        log.warning("unexpected keys (ignored): %s", ", ".join(unexpected[:10]))
    return report
