"""`distilkit export MODEL --out DIR`: ONNX graphs (templates + search for MixFormerV2, one graph otherwise), checked."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from distilkit.limits import MAX_IMAGE_INPUT


def export(
    model: str = typer.Argument(..., metavar="MODEL",
        help="A saved model directory (e.g. runs/mixformerv2-s/score/model), a distilkit model name or timm:<name> (random "
             "weights)."),
    out: Path = typer.Option(..., "--out",
        help="Export folder to write (export.json + .onnx graphs); it appears complete or not at all."),
    int8: bool = typer.Option(False, "--int8", help="Dynamic int8 quantization of every graph (onnxruntime's quantizer)."),
    opset: int = typer.Option(17, "--opset", min=7, max=21, help="ONNX opset."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier export in --out."),
    input_size: Optional[int] = typer.Option(None, "--input-size", min=1, max=MAX_IMAGE_INPUT,
        help="Image side for image models (timm:, saved) that do not record it."),
) -> None:
    """Export MODEL to ONNX for onnxruntime / OpenVINO / TensorRT; MixFormerV2 keeps its template cache (two graphs)."""
    from rich.console import Console
    from rich.table import Table

    from distilkit.commands.models import resolve_model
    from distilkit.deploy.export import export_onnx
    from distilkit.deploy.runtime import require

    require("onnx", "distilkit export")  # before building anything
    require("onnxruntime", "distilkit export")
    net, inputs = resolve_model(model, input_size=input_size)
    example = None if isinstance(inputs, dict) else inputs
    manifest = export_onnx(net, out, example_inputs=example, int8=int8, opset=opset, force=force, source=model)
    table = Table(title=f"{out} ({manifest.kind}, {manifest.precision}, opset {manifest.opset})")
    for col in ("graph", "inputs", "outputs", "MB"):
        table.add_column(col, justify="right" if col == "MB" else "left")
    shape = lambda dims: "×".join(str(d) for d in dims)  # noqa: E731
    for info in manifest.graphs.values():
        inputs = "\n".join(f"{k} {shape(v)}" for k, v in info.inputs.items())
        outputs = "\n".join(f"{k} {shape(v)}" for k, v in info.outputs.items())
        table.add_row(info.file, inputs, outputs, f"{(out / info.file).stat().st_size / 1e6:.2f}")
    console = Console()
    console.print(table)
    diffs = ", ".join(f"{k} {v:.2e}" for k, v in manifest.max_abs_diff.items())
    console.print(f"max |torch - onnxruntime| on random inputs: {diffs}"
                  + (" (int8: differences are quantization error, see RESULTS.md for the accuracy it costs)" if int8 else ""))
    if manifest.kind == "mixformerv2":
        console.print(f"track with distilkit.deploy.OnnxTracker({str(out)!r}) or `distilkit eval {out}`")
