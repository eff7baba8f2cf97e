"""An export folder's `export.json`: what each graph takes and returns, how to prepare its images, how it was checked.

Written by `distilkit.deploy.export_onnx` (torch); read here without torch, by `OnnxTracker` and by anyone
driving the graphs from another runtime (onnxruntime, OpenVINO, TensorRT), who needs no distilkit at all:
the names, shapes and the preprocessing are all in the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distilkit.errors import DistilkitError

FORMAT = "distilkit-onnx/1"
EXPORT_FILE = "export.json"
#: Kinds of export: a MixFormerV2 tracker as two graphs (templates once, search per frame), or any model as one.
TRACKER, SINGLE = "mixformerv2", "single"
GRAPHS = {TRACKER: ("templates", "search"), SINGLE: ("model",)}
PRECISIONS = ("fp32", "int8")
#: What a tracker export's `tracker` section must hold (a runtime crops and updates templates by these).
TRACKER_FIELDS = {"model_name": str, "template_size": int, "search_size": int, "template_factor": (int, float),
                  "search_factor": (int, float), "num_online_templates": int, "score_head": bool}


@dataclass
class GraphInfo:
    """One graph file: its inputs and outputs (name → shape; a str is a dynamic dimension) and SHA-256."""

    file: str
    inputs: dict[str, list[int | str]]
    outputs: dict[str, list[int | str]]
    sha256: str


@dataclass
class ExportManifest:
    """The content of export.json. `tracker` (MixFormerV2 exports): image sizes, crop factors, online templates,
    score head, model name; `preprocess`: how a uint8 RGB crop becomes a graph input; `max_abs_diff`: the largest
    difference to the torch model per output, measured when the folder was written."""

    kind: str
    precision: str
    opset: int
    graphs: dict[str, GraphInfo]
    preprocess: dict[str, Any]
    max_abs_diff: dict[str, float]
    tracker: dict[str, Any] | None = None
    source: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    format: str = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_export_dir(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a folder holding an export.json (an export folder, valid or not)."""
    return Path(path).joinpath(EXPORT_FILE).is_file()


def _field(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data or not isinstance(data[key], kind) or isinstance(data[key], bool) and kind is int:
        name = "number" if isinstance(kind, tuple) else kind.__name__
        raise DistilkitError(f"{where}: '{key}' is missing or not a {name}")
    return data[key]


def _tracker_section(data: dict[str, Any], where: str) -> dict[str, Any]:
    section = _field(data, "tracker", dict, where)
    for key, kind in TRACKER_FIELDS.items():
        _field(section, key, kind, f"{where}: tracker")
    return section


def _graph(data: Any, name: str, where: str) -> GraphInfo:
    if not isinstance(data, dict):
        raise DistilkitError(f"{where}: graphs.{name} is not an object")
    here = f"{where}: graphs.{name}"
    info = GraphInfo(_field(data, "file", str, here), _field(data, "inputs", dict, here), _field(data, "outputs", dict, here),
                     _field(data, "sha256", str, here))
    if Path(info.file).name != info.file or info.file in ("", ".", ".."):
        raise DistilkitError(f"{where}: graphs.{name}.file {info.file!r} must be a file name inside the folder")
    return info


def load_manifest(folder: str | os.PathLike[str], *, check_files: bool = True) -> ExportManifest:
    """Read and check `folder`/export.json; check_files: every graph it lists is there with the bytes it was
    written with. Any problem is one DistilkitError naming the folder and what is wrong."""
    root = Path(folder)
    if not root.is_dir():
        raise DistilkitError(f"export folder {str(root)!r} does not exist" if not root.exists()
                             else f"{str(root)!r} is a file: give the folder `distilkit export` wrote")
    path = root / EXPORT_FILE
    if not path.is_file():
        raise DistilkitError(f"{str(root)!r} has no {EXPORT_FILE}: not a folder written by `distilkit export`")
    where = str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DistilkitError(f"{where}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise DistilkitError(f"{where}: format {got!r} is not {FORMAT!r} (written by another distilkit version?)")
    kind = _field(data, "kind", str, where)
    if kind not in GRAPHS:
        raise DistilkitError(f"{where}: unknown kind {kind!r}; expected one of {', '.join(GRAPHS)}")
    precision = _field(data, "precision", str, where)
    if precision not in PRECISIONS:
        raise DistilkitError(f"{where}: unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    graphs = _field(data, "graphs", dict, where)
    missing = [g for g in GRAPHS[kind] if g not in graphs]
    if missing:
        raise DistilkitError(f"{where}: a {kind} export lists graphs {', '.join(GRAPHS[kind])}; missing {', '.join(missing)}")
    manifest = ExportManifest(
        kind=kind, precision=precision, opset=_field(data, "opset", int, where),
        graphs={name: _graph(graphs[name], name, where) for name in GRAPHS[kind]},
        preprocess=_field(data, "preprocess", dict, where), max_abs_diff=_field(data, "max_abs_diff", dict, where),
        tracker=_tracker_section(data, where) if kind == TRACKER else None,
        source=str(data.get("source", "")), versions=dict(data.get("versions") or {}),
    )
    if check_files:
        for name, info in manifest.graphs.items():
            file = root / info.file
            if not file.is_file():
                raise DistilkitError(f"{str(root)!r}: the {name} graph {info.file} is missing (export.json lists it); "
                                     "export again with `distilkit export`")
            if file_sha256(file) != info.sha256:
                raise DistilkitError(f"{file}: the file changed after export (SHA-256 differs from export.json); "
                                     "export again with `distilkit export`")
    return manifest
