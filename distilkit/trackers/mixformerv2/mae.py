"""Start a MixViT / MixFormerV2 backbone from MAE ViT-B weights, as the official teacher and first student do."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from torch import nn

from distilkit.errors import DistilkitError
from distilkit.trackers.mixformerv2.checkpoint import _read_state_dict

log = logging.getLogger(__name__)

#: MAE entries the official code does not load: the decoder, the mask token and the 1-D position table
#: (the tracker uses its own 2-D sin-cos tables for template and search).
_SKIPPED = re.compile(r"^(decoder_|mask_token$|pos_embed$)")
#: What makes a state dict an MAE / timm ViT encoder (timm key layout).
_ENCODER = re.compile(r"^(patch_embed\.proj\.weight|blocks\.\d+\.attn\.qkv\.weight)$")


def load_mae_backbone(model: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Copy an MAE ViT checkpoint (`{"model": state_dict}` in timm's key layout) into `model.backbone`.

    `decoder_*`, `mask_token` and `pos_embed` are skipped (as the official code does). Returns the
    backbone keys the file did not provide (missing) and the file's keys the backbone has no place for
    (unexpected), and logs them in one line; a shape mismatch is a DistilkitError naming the key."""
    path = Path(path)
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise DistilkitError(f"load_mae_backbone: {type(model).__name__} has no `backbone` (a MixViT/MixFormerV2 model)")
    source = _read_state_dict(path)
    if not any(_ENCODER.match(key) for key in source):
        first = ", ".join(list(source)[:3]) or "none"
        raise DistilkitError(f"{path}: not an MAE ViT checkpoint (no patch_embed.proj.weight or blocks.N.attn.qkv.weight; "
                             f"first keys: {first})")
    target = backbone.state_dict()
    used = {key: value for key, value in source.items() if not _SKIPPED.match(key)}
    for key, value in used.items():
        if key in target and tuple(value.shape) != tuple(target[key].shape):
            raise DistilkitError(f"{path}: {key} has shape {tuple(value.shape)} in the checkpoint but "
                                 f"{tuple(target[key].shape)} in the backbone (not a ViT-B of this width?)")
    backbone.load_state_dict({k: v for k, v in used.items() if k in target}, strict=False)
    missing = [key for key in target if key not in used]
    unexpected = [key for key in used if key not in target]
    log.info("MAE backbone %s: %d tensors loaded; missing %s; unexpected %s", path, len(used) - len(unexpected),
             ", ".join(missing) or "none", ", ".join(unexpected) or "none")
    return missing, unexpected


__all__ = ["load_mae_backbone"]
