"""Resolve a MODEL argument of the CLI to a built model and example inputs (shared by flops and eval).

MODEL is a distilkit model name (`mixformerv2-s`, `mixvit-b-tiny`, ...), `timm:<name>` (built with
pretrained=False), or a directory written by `distilkit.io.save` (model.safetensors + arch.json).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from distilkit.errors import DistilkitError


def distilkit_model_names() -> list[str]:
    """Every name `resolve_model` accepts without a prefix."""
    from distilkit.trackers.mixformerv2 import PRESETS

    return list(PRESETS)


def tracker_inputs(config: Any, batch: int = 1) -> dict[str, Any]:
    """Random template, online template and search images matching a MixFormerV2 config."""
    import torch

    t, s, n = config.template_size, config.search_size, config.num_online_templates
    online = torch.randn(batch, 3, t, t) if n == 1 else torch.randn(batch, n, 3, t, t)
    return {"template": torch.randn(batch, 3, t, t), "online_template": online, "search": torch.randn(batch, 3, s, s)}


def _reject(what: str, value: int | None, spec: str, hint: str) -> None:
    if value is not None:
        raise DistilkitError(f"{what} does not apply to {spec!r}: {hint}")


def _check_size(size: int, patch: int, what: str, spec: str) -> None:
    if size < 1 or size % patch:
        raise DistilkitError(f"{what} {size} is not divisible by the patch size {patch} of {spec!r}")


def _resolve_distilkit(name: str, template_size: int | None, search_size: int | None) -> tuple[Any, Any]:
    from distilkit.trackers.mixformerv2 import PRESETS, build_model

    cfg = PRESETS[name]
    overrides = {}
    for what, value in (("template_size", template_size), ("search_size", search_size)):
        if value is not None:
            _check_size(value, cfg.patch_size, f"--{what.replace('_', '-')}", name)
            overrides[what] = value
    model = build_model(name, **overrides)
    return model, tracker_inputs(model.config)


def _patch_size(model: Any) -> int | None:
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if patch is None:
        return None
    return int(patch[0] if isinstance(patch, (tuple, list)) else patch)


def _resolve_timm(name: str, input_size: int | None) -> tuple[Any, Any]:
    import timm
    import torch

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; close matches: {', '.join(close)}" if close else "; see timm.list_models()"
        raise DistilkitError(f"unknown timm model {name!r}{hint}")
    try:
        model = timm.create_model(name, pretrained=False, **({} if input_size is None else {"img_size": input_size}))
    except TypeError:  # no img_size argument (e.g. CNNs): any input size works
        model = timm.create_model(name, pretrained=False)
    except Exception as err:  # the architecture rejects this size
        raise DistilkitError(f"timm:{name} cannot be built for --input-size {input_size}: {err}") from None
    channels, height, width = model.pretrained_cfg.get("input_size", (3, 224, 224))
    if input_size is not None:
        patch = _patch_size(model)
        if patch is not None:
            _check_size(input_size, patch, "--input-size", f"timm:{name}")
        height = width = input_size
    return model.eval(), torch.randn(1, channels, height, width)


def _resolve_saved(path: Path, input_size: int | None) -> tuple[Any, Any]:
    import torch

    if path.is_file():
        raise DistilkitError(f"{str(path)!r} is a file: give the model directory that holds arch.json and model.safetensors")
    if not path.is_dir():
        raise DistilkitError(f"model directory {str(path)!r} does not exist")
    arch_file = path / "arch.json"
    if not arch_file.is_file():
        raise DistilkitError(f"{str(path)!r} has no arch.json: not a model directory saved by distilkit (model.safetensors + "
                             "arch.json)")
    from distilkit import io as dk_io

    model = dk_io.load(path)
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "template_size") and hasattr(config, "search_size"):
        _reject("--input-size", input_size, str(path), "a saved tracker keeps the image sizes it was built with")
        return model.eval(), tracker_inputs(config)
    channels, height, width = (getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, None, None))
    built = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if built is not None:
        height, width = built
    if input_size is not None:
        patch = _patch_size(model)
        if patch is not None:
            _check_size(input_size, patch, "--input-size", str(path))
        if built is not None and tuple(built) != (input_size, input_size):
            raise DistilkitError(f"{str(path)!r} was saved for {tuple(built)} px inputs; --input-size {input_size} does not fit "
                                 "its position embedding")
        height = width = input_size
    if height is None:
        raise DistilkitError(f"{str(path)!r} is not a tracker and does not record its input size: pass --input-size")
    return model.eval(), torch.randn(1, channels, height, width)


def resolve_model(
    spec: str,
    input_size: int | None = None,
    template_size: int | None = None,
    search_size: int | None = None,
) -> tuple[Any, Any]:
    """(model in eval mode, example inputs) for a MODEL argument; bad specs raise DistilkitError.

    Example inputs are a dict of keyword tensors for trackers, one image tensor otherwise.
    `input_size` applies to image models, `template_size`/`search_size` to trackers.
    """
    if spec.startswith("timm:"):
        for what, value in (("--template-size", template_size), ("--search-size", search_size)):
            _reject(what, value, spec, "use --input-size for image models")
        return _resolve_timm(spec[len("timm:"):], input_size)
    names = distilkit_model_names()
    if spec in names:
        _reject("--input-size", input_size, spec, "use --template-size / --search-size for trackers")
        return _resolve_distilkit(spec, template_size, search_size)
    path = Path(spec).expanduser()
    if path.exists() or "/" in spec or spec.startswith("."):
        for what, value in (("--template-size", template_size), ("--search-size", search_size)):
            _reject(what, value, spec, "a saved model keeps the image sizes it was built with")
        return _resolve_saved(path, input_size)
    raise DistilkitError(
        f"unknown model {spec!r}; valid names: {', '.join(names)}; or timm:<name>, or a directory saved by distilkit"
    )
