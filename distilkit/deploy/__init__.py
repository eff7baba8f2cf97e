"""Deployment: ONNX export that keeps the template cache (`export_onnx`, torch) and `OnnxTracker`, which tracks on
onnxruntime without importing torch. Needs the `deploy` extra: pip install 'distilkit[deploy]'.
"""

from __future__ import annotations

from typing import Any

from distilkit.deploy.manifest import EXPORT_FILE, ExportManifest, GraphInfo, is_export_dir, load_manifest
from distilkit.deploy.tracker import OnnxTracker, OnnxTrackerModel

__all__ = ["EXPORT_FILE", "ExportManifest", "GraphInfo", "OnnxTracker", "OnnxTrackerModel", "export_onnx",
           "is_export_dir", "load_manifest"]


def __getattr__(name: str) -> Any:
    """`export_onnx` imports torch: loaded on first use, so the tracker side stays torch-free."""
    if name == "export_onnx":
        from distilkit.deploy.export import export_onnx

        return export_onnx
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
