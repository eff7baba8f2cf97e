"""ONNX export: a MixFormerV2 tracker as two graphs that keep the template cache, any other model as one graph.

`templates.onnx`: template (B,3,t,t) and online_template (B,n,3,t,t) → keys and values (L,B,heads,(1+n)·T,head_dim),
every layer's template keys/values. `search.onnx`: search (B,3,s,s) and those keys/values (batch B or 1, shared by
every search image) → boxes (B,4, normalised x1 y1 x2 y2 in the search crop) and, with a score head, score (B,), a
logit. A runtime runs `templates.onnx` once per template change and only `search.onnx` per frame. Other models
(timm ViTs, pruned or not) export as `model.onnx`: input (B,C,H,W) → output (or one output per named result).
Every graph is checked against the torch model when written; export.json records names, shapes, preprocessing
and the differences found.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from distilkit import __version__
from distilkit.atomic import fsync_dir, make_dirs, write_atomic
from distilkit.data.normalize import IMAGENET_MEAN, IMAGENET_STD
from distilkit.deploy.manifest import EXPORT_FILE, SINGLE, TRACKER, ExportManifest, GraphInfo, file_sha256, is_export_dir
from distilkit.deploy.runtime import inference_session, require
from distilkit.errors import DistilkitError
from distilkit.kernels import use_native

#: The opset graphs are written with (onnxruntime ≥ 1.13, OpenVINO and TensorRT 8.5+ read it; LayerNormalization is native).
DEFAULT_OPSET = 17
#: Largest |torch - onnxruntime| an fp32 export may show (relative to the output's own scale, at least 1).
FP32_TOLERANCE = 1e-3


class TemplateGraph(nn.Module):
    """template, online_template → every layer's template keys and values, stacked: what `templates.onnx` computes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, template: torch.Tensor, online_template: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        caches, _ = self.model.backbone.encode_templates(template, online_template)
        return torch.stack([c.k for c in caches]), torch.stack([c.v for c in caches])


class SearchGraph(nn.Module):
    """search, keys, values → boxes (and score): the template-cached per-frame step, what `search.onnx` computes.
    skip_unused as in `MixFormerV2.forward_search`: the last block computes only the prediction tokens."""

    def __init__(self, model: nn.Module, skip_unused: bool = True) -> None:
        super().__init__()
        self.model, self.skip_unused = model, skip_unused

    def forward(self, search: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from distilkit.trackers.mixformerv2.model import _search_step

        tail = (self.model.config.num_pred_tokens or None) if self.skip_unused else None
        out = _search_step(self.model, search, list(keys.unbind(0)), list(values.unbind(0)), tail)
        return (out["boxes"], out["score"]) if "score" in out else (out["boxes"],)


class OutputsAsTuple(nn.Module):
    """A model whose forward returns a tensor, a tuple/list of tensors or a dict of them, as a tuple of tensors."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        if isinstance(out, torch.Tensor):
            return (out,)
        return tuple(out[name] for name in self.names) if isinstance(out, Mapping) else tuple(out)


def _output_names(out: Any) -> list[str]:
    """Graph output names for what a model returned: 'output', output_0.., or a dict's keys."""
    if isinstance(out, torch.Tensor):
        return ["output"]
    if isinstance(out, Mapping) and all(isinstance(v, torch.Tensor) for v in out.values()):
        return [str(k) for k in out]
    if isinstance(out, (tuple, list)) and all(isinstance(v, torch.Tensor) for v in out):
        return [f"output_{i}" for i in range(len(out))]
    raise DistilkitError(f"export: the model returns {type(out).__name__}; "
                         "a tensor, a tuple/list or a dict of tensors can be exported")


def _shape(t: torch.Tensor, dynamic: dict[int, str]) -> list[int | str]:
    return [dynamic.get(i, int(d)) for i, d in enumerate(t.shape)]


def export_graph(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, inputs: list[str], outputs: list[str],
                 dynamic: dict[str, dict[int, str]], opset: int) -> None:
    """torch.onnx.export through the TorchScript tracer (no onnxscript needed), quietly: tracer warnings about
    Python-side shape checks are expected, the checks run once on the example shapes."""
    kwargs: dict[str, Any] = {"input_names": inputs, "output_names": outputs, "dynamic_axes": dynamic,
                              "opset_version": opset, "do_constant_folding": True}
    if "dynamo" in torch.onnx.export.__code__.co_varnames:
        kwargs["dynamo"] = False
    with warnings.catch_warnings(), use_native(False), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, args, os.fspath(path), **kwargs)
        except Exception as err:  # the exporter raises a zoo of types for unsupported operators
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise DistilkitError(f"export: torch.onnx.export failed for {path.name}: {first[:300]}") from None


def _weight_matmuls(path: Path) -> list[str]:
    """Names of the MatMul/Gemm nodes that multiply by a weight (an initializer): the layers int8 quantizes.
    Attention's activation × activation products stay fp32: quantizing both of their inputs per call costs
    accuracy and gains little."""
    onnx = require("onnx", "--int8")
    graph = onnx.load(os.fspath(path)).graph
    weights = {init.name for init in graph.initializer}
    return [node.name for node in graph.node if node.op_type in ("MatMul", "Gemm") and any(i in weights for i in node.input)]


def quantize_graph(path: Path) -> None:
    """Dynamic int8 quantization in place by onnxruntime's quantizer: weights int8 per output channel (7-bit, which
    AVX2 CPUs without VNNI need to avoid saturating their 16-bit sums), activations quantized per call."""
    quantization = require("onnxruntime.quantization", "--int8")
    fp32 = path.with_name(path.stem + ".fp32.onnx")
    path.rename(fp32)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs advice on the root logger
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantization.quantize_dynamic(os.fspath(fp32), os.fspath(path), weight_type=quantization.QuantType.QInt8,
                                          per_channel=True, reduce_range=True, nodes_to_quantize=_weight_matmuls(fp32))
    finally:
        root.setLevel(level)
    fp32.unlink()


def _difference(name: str, ref: torch.Tensor, got: np.ndarray) -> float:
    if tuple(got.shape) != tuple(ref.shape):
        raise DistilkitError(f"export check: {name} has shape {tuple(got.shape)} in onnxruntime, {tuple(ref.shape)} in torch")
    return float(np.abs(got.astype(np.float64) - ref.double().numpy()).max()) if ref.numel() else 0.0


def _check_fp32(diffs: dict[str, float], refs: dict[str, torch.Tensor]) -> None:
    for name, diff in diffs.items():
        bound = FP32_TOLERANCE * max(1.0, float(refs[name].abs().max()))
        if not diff <= bound:
            raise DistilkitError(f"export check failed: {name} differs from the torch model by {diff:.3g} in onnxruntime "
                                 f"(tolerance {bound:.3g}); nothing was written")


def _graph_info(path: Path, inputs: dict[str, list[int | str]], outputs: dict[str, list[int | str]]) -> GraphInfo:
    return GraphInfo(path.name, inputs, outputs, file_sha256(path))


Exported = tuple[dict[str, GraphInfo], dict[str, float]]  # the graphs written and max |torch - onnxruntime| per output


def _export_tracker(model: nn.Module, folder: Path, opset: int,
                    int8: bool) -> tuple[dict[str, GraphInfo], dict[str, float], dict[str, Any]]:
    cfg = model.config
    t, s, n = cfg.template_size, cfg.search_size, cfg.num_online_templates
    generator = torch.Generator().manual_seed(0)
    template = torch.randn(1, 3, t, t, generator=generator)
    online = torch.randn(1, n, 3, t, t, generator=generator)
    search = torch.randn(2, 3, s, s, generator=generator)  # batch 2 against a template batch of 1: both axes stay free
    templates_graph, search_graph = TemplateGraph(model), SearchGraph(model)
    with torch.no_grad(), use_native(False):
        keys, values = templates_graph(template, online)
        # the reference is the model's full forward (no template cache is touched): the graphs must give its boxes
        b = search.shape[0]
        ref_out = model(template.expand(b, -1, -1, -1), online.expand(b, -1, -1, -1, -1), search)
    outputs = ["boxes", "score"] if "score" in ref_out else ["boxes"]
    kv_dynamic = {1: "template_batch"}
    template_axes = {"template": {0: "template_batch"}, "online_template": {0: "template_batch"}}
    export_graph(templates_graph, (template, online), folder / "templates.onnx", ["template", "online_template"],
                 ["keys", "values"], {**template_axes, "keys": kv_dynamic, "values": kv_dynamic}, opset)
    search_axes = {"search": {0: "batch"}, "keys": kv_dynamic, "values": kv_dynamic, **{o: {0: "batch"} for o in outputs}}
    export_graph(search_graph, (search, keys, values), folder / "search.onnx", ["search", "keys", "values"], outputs,
                 search_axes, opset)
    if int8:
        quantize_graph(folder / "templates.onnx")
        quantize_graph(folder / "search.onnx")
    got_kv = inference_session(folder / "templates.onnx").run(None, {"template": template.numpy(),
                                                                     "online_template": online.numpy()})
    got = inference_session(folder / "search.onnx").run(None, {"search": search.numpy(), "keys": got_kv[0],
                                                               "values": got_kv[1]})
    refs = {"keys": keys, "values": values, **{o: ref_out[o] for o in outputs}}
    diffs = {name: _difference(name, refs[name], arr) for name, arr in zip(refs, [*got_kv, *got])}
    if not int8:
        _check_fp32(diffs, refs)
    kv_shape = _shape(keys, kv_dynamic)
    graphs = {
        "templates": _graph_info(folder / "templates.onnx", {"template": ["template_batch", 3, t, t],
                                                             "online_template": ["template_batch", n, 3, t, t]},
                                 {"keys": kv_shape, "values": kv_shape}),
        "search": _graph_info(folder / "search.onnx", {"search": ["batch", 3, s, s], "keys": kv_shape, "values": kv_shape},
                              {o: _shape(ref_out[o], {0: "batch"}) for o in outputs}),
    }
    tracker = {"model_name": cfg.name, "template_size": t, "search_size": s, "template_factor": 2.0,
               "search_factor": float(cfg.search_factor), "num_online_templates": n, "score_head": "score" in outputs,
               "boxes": "normalised x1 y1 x2 y2 in the search crop", "score": "logit (sigmoid gives the confidence)"}
    return graphs, diffs, tracker


def _export_single(model: nn.Module, example: torch.Tensor, folder: Path, opset: int, int8: bool) -> Exported:
    if not isinstance(example, torch.Tensor) or example.dim() < 2:
        raise DistilkitError("export: a model other than a tracker needs one example input tensor (B, C, H, W)")
    x = torch.cat([example[:1], torch.randn_like(example[:1])])  # batch 2: the batch axis stays free
    with torch.no_grad(), use_native(False):
        out = model(x)
    names = _output_names(out)
    graph = OutputsAsTuple(model, names)
    with torch.no_grad(), use_native(False):
        refs = dict(zip(names, graph(x)))
    batch_axes = {"input": {0: "batch"}, **{o: {0: "batch"} for o in names}}
    export_graph(graph, (x,), folder / "model.onnx", ["input"], names, batch_axes, opset)
    if int8:
        quantize_graph(folder / "model.onnx")
    got = inference_session(folder / "model.onnx").run(None, {"input": x.numpy()})
    diffs = {name: _difference(name, refs[name], arr) for name, arr in zip(names, got)}
    if not int8:
        _check_fp32(diffs, refs)
    info = _graph_info(folder / "model.onnx", {"input": _shape(x, {0: "batch"})},
                       {o: _shape(refs[o], {0: "batch"}) for o in names})
    return {"model": info}, diffs


def _check_exportable(model: nn.Module) -> None:
    dtypes = {p.dtype for p in model.parameters()} | {b.dtype for b in model.buffers() if b.is_floating_point()}
    if dtypes - {torch.float32}:
        raise DistilkitError(f"export: float32 models only (this one holds {', '.join(sorted(map(str, dtypes)))}); "
                             "call model.float() first")
    devices = {p.device.type for p in model.parameters()}
    if devices - {"cpu"}:
        raise DistilkitError(f"export: move the model to the CPU first (it is on {', '.join(sorted(devices))})")


def _check_out(out: Path, force: bool) -> None:
    """`out` may be new, an empty folder, or (with force) an earlier export folder; anything else is refused."""
    if not out.exists():
        return
    if not out.is_dir():
        raise DistilkitError(f"export folder {out} exists and is not a directory")
    if any(out.iterdir()):
        if not is_export_dir(out):
            raise DistilkitError(f"export folder {out} is not empty and holds no export: choose another folder")
        if not force:
            raise DistilkitError(f"export folder {out} already holds an export: pass --force to replace it")


def _replace_folder(staged: Path, out: Path, force: bool) -> None:
    """Move the fully written `staged` folder to `out` (an earlier export there is set aside, then deleted)."""
    _check_out(out, force)
    if out.exists():
        old = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.old")
        out.rename(old)
        try:
            staged.rename(out)
        except OSError:
            old.rename(out)  # the earlier export goes back where it was
            raise
        shutil.rmtree(old)
    else:
        staged.rename(out)
    fsync_dir(out.parent)


def export_onnx(model: nn.Module, out: str | os.PathLike[str], *, example_inputs: torch.Tensor | None = None,
                int8: bool = False, opset: int = DEFAULT_OPSET, force: bool = False, source: str = "") -> ExportManifest:
    """Write `out`/ (export.json + graphs) for `model`: a MixFormerV2 as templates.onnx + search.onnx, any other
    model as model.onnx from `example_inputs` (B,C,H,W). int8: dynamic int8 quantization of every graph. The
    folder appears complete or not at all; an existing export is replaced only with force."""
    require("onnx", "export")
    require("onnxruntime", "export (every graph is checked in onnxruntime)")
    if not isinstance(model, nn.Module):
        raise DistilkitError(f"export: expected a torch model (nn.Module), got {type(model).__name__}")
    if not 7 <= opset <= 21:
        raise DistilkitError(f"export: opset {opset} is outside 7..21 (17 is the default)")
    _check_exportable(model)
    out = Path(out)
    _check_out(out, force)  # before any work
    from distilkit.trackers.mixformerv2 import MixFormerV2

    was_training = model.training
    model.eval()
    make_dirs(out.parent)
    staged = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    staged.mkdir()
    try:
        if isinstance(model, MixFormerV2):
            graphs, diffs, tracker = _export_tracker(model, staged, opset, int8)
            kind = TRACKER
        else:
            graphs, diffs = _export_single(model, example_inputs, staged, opset, int8)
            kind, tracker = SINGLE, None
        ort = require("onnxruntime", "export")
        manifest = ExportManifest(
            kind=kind, precision="int8" if int8 else "fp32", opset=opset, graphs=graphs,
            preprocess={"layout": "NCHW, RGB", "scale": 1 / 255, "mean": IMAGENET_MEAN.tolist(), "std": IMAGENET_STD.tolist(),
                        "rule": "(pixel * scale - mean) / std per channel"},
            max_abs_diff=diffs, tracker=tracker, source=source,
            versions={"distilkit": __version__, "torch": torch.__version__, "onnxruntime": ort.__version__},
        )
        write_atomic(staged / EXPORT_FILE, manifest.to_json())
        _replace_folder(staged, out, force)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    finally:
        model.train(was_training)
    return manifest


__all__ = ["DEFAULT_OPSET", "FP32_TOLERANCE", "SearchGraph", "TemplateGraph", "export_graph", "export_onnx", "quantize_graph"]
