"""OnnxTracker: MixFormerV2Tracker's crops, cached templates and online updates on onnxruntime, without torch.

`templates.onnx` runs once per template change (the first frame, each online update) and `search.onnx` once per
frame, exactly as the torch tracker reuses its template cache.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from distilkit.checks import as_int, as_number
from distilkit.data.crop import check_rgb_image, crop_around
from distilkit.data.normalize import normalize_patch
from distilkit.deploy.manifest import TRACKER, load_manifest
from distilkit.deploy.runtime import inference_session
from distilkit.errors import DistilkitError
from distilkit.trackers.single_object import (
    FALLBACK_UPDATE_INTERVAL, FollowsOnlineRule, OnlineUpdateRule, box_in_image, check_initial_box, online_update_enabled,
)

class OnnxTrackerModel:
    """An export folder's two graphs loaded in onnxruntime, shared by any number of `OnnxTracker`s (one per
    sequence or target). `template_runs` / `search_runs` count the calls of each graph."""

    def __init__(self, folder: str | os.PathLike[str], threads: int | None = None) -> None:
        self.folder = Path(folder)
        self.manifest = load_manifest(self.folder)
        if self.manifest.kind != TRACKER:
            raise DistilkitError(f"{str(self.folder)!r} holds a {self.manifest.kind} export (one graph of a model that "
                                 "is not a MixFormerV2 tracker): OnnxTracker needs a MixFormerV2 export "
                                 "(templates.onnx + search.onnx)")
        settings = self.manifest.tracker  # its fields checked by load_manifest
        self.name = str(settings["model_name"])
        self.template_size, self.search_size = int(settings["template_size"]), int(settings["search_size"])
        self.template_factor, self.search_factor = float(settings["template_factor"]), float(settings["search_factor"])
        self.num_online_templates, self.score_head = int(settings["num_online_templates"]), bool(settings["score_head"])
        threads = None if threads is None else as_int(threads, "threads", minimum=1)
        graphs = self.manifest.graphs
        self._templates = inference_session(self.folder / graphs["templates"].file, threads)
        self._search = inference_session(self.folder / graphs["search"].file, threads)
        self.template_runs = self.search_runs = 0

    def _check(self, array: np.ndarray, shape: tuple[int, ...], what: str) -> None:
        if not isinstance(array, np.ndarray) or array.shape != shape or array.dtype != np.float32:
            got = f"{array.dtype} {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
            raise DistilkitError(f"{what}: expected a normalised float32 array of shape {shape}, got {got}")

    def encode_templates(self, template: np.ndarray, online: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """template (1,3,t,t) and online (1,n,3,t,t) → every layer's template keys and values."""
        t, n = self.template_size, self.num_online_templates
        self._check(template, (1, 3, t, t), "template")
        self._check(online, (1, n, 3, t, t), "online_template")
        self.template_runs += 1
        keys, values = self._templates.run(None, {"template": template, "online_template": online})
        return keys, values

    def search(self, search: np.ndarray, keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, float]:
        """search (1,3,s,s) with cached keys/values → (normalised x1 y1 x2 y2 box, score logit or NaN)."""
        self._check(search, (1, 3, self.search_size, self.search_size), "search")
        self.search_runs += 1
        out = self._search.run(None, {"search": search, "keys": keys, "values": values})
        return out[0][0].astype(np.float64), float(out[1][0]) if self.score_head else float("nan")


class OnnxTracker(FollowsOnlineRule):
    """pytracking-style tracker on an export folder: `initialize(image, box_xywh)`, then `track(image) -> (box_xywh,
    score)`, with MixFormerV2Tracker's crops, online-template rule and outputs (score: sigmoid confidence, NaN
    without a score head). `export` is a folder written by `distilkit export` or a loaded `OnnxTrackerModel`."""

    def __init__(self, export: str | os.PathLike[str] | OnnxTrackerModel, *, template_factor: float | None = None,
                 search_factor: float | None = None, update_interval: int = FALLBACK_UPDATE_INTERVAL,
                 score_threshold: float = 0.5, online_update: bool | None = None, threads: int | None = None) -> None:
        """template_factor / search_factor: crop side = factor × √(w·h), as MixFormerV2Tracker's (default: the
        export's, i.e. the model's); threads: onnxruntime's when `export` is a folder."""
        if isinstance(export, OnnxTrackerModel):
            self.model = export
        elif isinstance(export, (str, os.PathLike)):
            self.model = OnnxTrackerModel(export, threads)
        else:
            raise DistilkitError(f"OnnxTracker takes an export folder (written by `distilkit export`) or an OnnxTrackerModel, "
                                 f"got {type(export).__name__}")
        self.template_factor = as_number(self.model.template_factor if template_factor is None else template_factor,
                                         "template_factor", above=0)
        self.search_factor = as_number(self.model.search_factor if search_factor is None else search_factor,
                                       "search_factor", above=0)
        self.rule: OnlineUpdateRule[np.ndarray] = OnlineUpdateRule(update_interval, score_threshold,
                                                                   self.model.num_online_templates)
        self.online_update = online_update_enabled(online_update, self.model.score_head)
        self.state: np.ndarray | None = None

    def _template(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        patch, _ = crop_around(image, box, self.template_factor, self.model.template_size)
        return normalize_patch(patch)

    def _encode(self) -> None:
        self.keys, self.values = self.model.encode_templates(self.template, self.online)

    def initialize(self, image: np.ndarray, box_xywh: np.ndarray) -> None:
        """Start tracking the target at `box_xywh` (x, y, w, h in pixels) in the first frame."""
        box = check_initial_box(image, box_xywh)
        self.state = None
        self.template = self._template(image, box)
        self.online = np.repeat(self.template[:, None], self.model.num_online_templates, axis=1)
        self._encode()
        self.state = box
        self.frame_id = 0
        self.rule.reset(self.template)

    def track(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """Locate the target in the next frame; returns (x, y, w, h) in pixels and the confidence."""
        if self.state is None:
            raise DistilkitError("track() called before initialize(image, box_xywh)")
        check_rgb_image(image)
        self.frame_id += 1
        patch, window = crop_around(image, self.state, self.search_factor, self.model.search_size)
        xyxy, logit = self.model.search(normalize_patch(patch), self.keys, self.values)
        self.state = box_in_image(xyxy, window, image.shape[:2])
        score = float(1.0 / (1.0 + np.exp(-logit))) if self.model.score_head else float("nan")
        if self.online_update:
            update = self.rule.step(self.frame_id, score, lambda: self._template(image, self.state))
            if update is not None:
                slot, template = update
                self.online[:, slot] = template[0]
                self._encode()
        return self.state.copy(), score


__all__ = ["OnnxTracker", "OnnxTrackerModel"]
