"""onnxruntime (and onnx) as optional dependencies: imported on first use, with how to get them when missing."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from distilkit.errors import DistilkitError

INSTALL_HINT = "pip install 'distilkit[deploy]'"


def require(module: str, what: str) -> ModuleType:
    """Import `module` (onnx, onnxruntime, onnxruntime.quantization) or say in one line how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        raise DistilkitError(f"{what} needs {top}, which is not installed here ({err}): {INSTALL_HINT}") from None


def inference_session(path: str | os.PathLike[str], threads: int | None = None) -> object:
    """An onnxruntime CPU session for the graph at `path`, on `threads` intra-op threads (default: onnxruntime's
    own choice, one per physical core); a file onnxruntime cannot read is a one-line DistilkitError."""
    ort = require("onnxruntime", "running an exported graph")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: shape-inference notes on every load say nothing to a user
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DistilkitError(f"{path}: onnxruntime cannot load this graph: {first[:300]}") from None
