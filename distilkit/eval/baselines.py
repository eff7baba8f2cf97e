"""Reference trackers to put numbers in context: a constant box, and OpenCV's CSRT/KCF (a dependency of distilkit)."""

from __future__ import annotations

import numpy as np

from distilkit.errors import DistilkitError

BASELINES = ("constant", "csrt", "kcf")


class ConstantBoxTracker:
    """Predicts the initial box in every frame: the floor any real tracker must beat."""

    def initialize(self, image: np.ndarray, box_xywh) -> None:
        self.box = np.asarray(box_xywh, dtype=np.float64).copy()

    def track(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        return self.box.copy(), 1.0


def opencv_available(kind: str = "csrt") -> bool:
    """Whether OpenCV with the contrib trackers (opencv-contrib-python-headless, a dependency) is importable."""
    try:
        _opencv_factory(kind)
    except DistilkitError:
        return False
    return True


def _opencv_factory(kind: str):
    try:
        import cv2
    except ImportError:
        raise DistilkitError(
            f"the {kind.upper()} baseline needs OpenCV's contrib trackers, a distilkit dependency that is missing "
            "here: pip install opencv-contrib-python-headless"
        ) from None
    name = {"csrt": "TrackerCSRT_create", "kcf": "TrackerKCF_create"}[kind]
    for module in (cv2, getattr(cv2, "legacy", None)):
        if module is not None and hasattr(module, name):
            return getattr(module, name)
    raise DistilkitError(f"this OpenCV build has no {name}: install opencv-contrib-python-headless")


class OpenCVTracker:
    """OpenCV's CSRT or KCF correlation-filter tracker behind the initialize/track interface."""

    def __init__(self, kind: str = "csrt"):
        if kind not in ("csrt", "kcf"):
            raise DistilkitError(f"unknown OpenCV tracker {kind!r}; expected csrt or kcf")
        self.kind, self._create = kind, _opencv_factory(kind)

    def initialize(self, image: np.ndarray, box_xywh) -> None:
        self._tracker = self._create()
        self.box = np.asarray(box_xywh, dtype=np.float64).copy()
        self._tracker.init(np.ascontiguousarray(image[..., ::-1]), tuple(int(round(v)) for v in self.box))

    def track(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        ok, box = self._tracker.update(np.ascontiguousarray(image[..., ::-1]))
        if ok:
            self.box = np.asarray(box, dtype=np.float64)
        return self.box.copy(), 1.0 if ok else 0.0


def make_baseline(name: str):
    """A fresh baseline tracker by name: constant, csrt or kcf (the last two need OpenCV contrib)."""
    key = name.lower()
    if key == "constant":
        return ConstantBoxTracker()
    if key in ("csrt", "kcf"):
        return OpenCVTracker(key)
    raise DistilkitError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")
