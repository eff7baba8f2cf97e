"""One-pass-evaluation metrics, identical to pytracking's OTB-style analysis.

Boxes are (N, 4) x,y,w,h arrays. Per frame: IoU and centre error against ground truth; success
rate = fraction of scored frames with IoU strictly above each threshold of 0:0.05:1 (a perfect
tracker gets 20/21); precision = centre error <= 20 px; normalised precision = centre error, each
axis divided by the gt size, <= 0.2. Frames with invalid ground truth (w or h <= 0, NaN, or flagged
invisible via `visible`) count as failures by default (pytracking's LaSOT convention) and are
dropped from the denominator with `exclude_invalid=True` (its GOT-10k/TrackingNet convention).
`valid` selects which frames are scored at all. Invalid predictions (NaN, w or h <= 0) fail.
GOT-10k AO/SR always score only frames with valid ground truth, as the official toolkit does.
Differences from pytracking, on purpose: it forces frame 0's prediction to the gt and replaces
zero-size predictions by the previous one (here the tracker's output is scored as is; `evaluate`
records the init box for frame 0), and it counts invalid frames as *successes* in normalised
precision outside LaSOT (err -1), which can push NP above 1 — here they fail like everywhere else.
Overall figures average the per-sequence curves (pytracking), see `SequenceScores`/`summarize`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from distilkit.data.sequence import sized_boxes
from distilkit.errors import DistilkitError

OVERLAP_THRESHOLDS = np.arange(21, dtype=np.float64) * 0.05  # as pytracking: torch.arange(0, 1.05, 0.05)
CENTER_THRESHOLDS = np.arange(0, 51, dtype=np.float64)
NORM_CENTER_THRESHOLDS = np.arange(0, 51, dtype=np.float64) / 100.0


def _as_boxes(boxes, what: str) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise DistilkitError(f"{what} boxes must have shape (N, 4) x,y,w,h, got {b.shape}")
    return b


def _prepare(pred, gt, valid, visible, exclude_invalid: bool):
    """Scored frames, gt validity and prediction validity, after shape checks."""
    p, g = _as_boxes(pred, "predicted"), _as_boxes(gt, "ground-truth")
    if len(p) != len(g):
        raise DistilkitError(f"{len(p)} predicted boxes for {len(g)} ground-truth frames")
    n = len(g)
    scored = np.ones(n, bool) if valid is None else np.asarray(valid, dtype=bool).reshape(-1)
    if len(scored) != n:
        raise DistilkitError(f"valid mask has {len(scored)} entries for {n} frames")
    gt_ok, pred_ok = sized_boxes(g), sized_boxes(p)
    if visible is not None:
        vis = np.asarray(visible, dtype=bool).reshape(-1)
        if len(vis) != n:
            raise DistilkitError(f"visible mask has {len(vis)} entries for {n} frames")
        gt_ok &= vis
    if exclude_invalid:
        scored = scored & gt_ok
    if not scored.any():
        raise DistilkitError("no frame left to score (all frames excluded or invalid)")
    return p[scored], g[scored], gt_ok[scored], pred_ok[scored]


def iou(pred, gt) -> np.ndarray:
    """Per-frame IoU of x,y,w,h boxes (continuous coordinates; 0 where either box is empty)."""
    p, g = _as_boxes(pred, "predicted"), _as_boxes(gt, "ground-truth")
    with np.errstate(invalid="ignore", divide="ignore"):
        iw = np.minimum(p[:, 0] + p[:, 2], g[:, 0] + g[:, 2]) - np.maximum(p[:, 0], g[:, 0])
        ih = np.minimum(p[:, 1] + p[:, 3], g[:, 1] + g[:, 3]) - np.maximum(p[:, 1], g[:, 1])
        inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
        union = p[:, 2] * p[:, 3] + g[:, 2] * g[:, 3] - inter
        out = np.where(union > 0, inter / union, 0.0)
    return np.clip(np.nan_to_num(out, nan=0.0), 0.0, 1.0)  # rounding must not lift a perfect box above 1


def center_error(pred, gt, normalized: bool = False) -> np.ndarray:
    """Per-frame distance between box centres, in px or (normalized) per-axis divided by the gt size."""
    p, g = _as_boxes(pred, "predicted"), _as_boxes(gt, "ground-truth")
    d = (p[:, :2] + p[:, 2:] / 2) - (g[:, :2] + g[:, 2:] / 2)
    if normalized:
        with np.errstate(invalid="ignore", divide="ignore"):
            d = d / g[:, 2:]
    return np.sqrt((d**2).sum(1))


def _overlaps(pred, gt, valid, visible, exclude_invalid) -> np.ndarray:
    p, g, gt_ok, pred_ok = _prepare(pred, gt, valid, visible, exclude_invalid)
    return np.where(gt_ok & pred_ok, iou(p, g), np.where(gt_ok, 0.0, -1.0))


def _errors(pred, gt, valid, visible, exclude_invalid, normalized: bool) -> np.ndarray:
    p, g, gt_ok, pred_ok = _prepare(pred, gt, valid, visible, exclude_invalid)
    with np.errstate(invalid="ignore"):
        return np.where(gt_ok & pred_ok, center_error(p, g, normalized), np.inf)


def success_curve(pred, gt, valid=None, *, visible=None, exclude_invalid: bool = False,
                  thresholds: np.ndarray = OVERLAP_THRESHOLDS) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds, rates): fraction of scored frames whose IoU is strictly greater than each threshold."""
    o = _overlaps(pred, gt, valid, visible, exclude_invalid)
    return thresholds, (o[:, None] > thresholds[None, :]).mean(0)


def auc(pred, gt, valid=None, *, visible=None, exclude_invalid: bool = False) -> float:
    """Area under the success curve: mean of the 21 success rates (pytracking/OTB)."""
    return float(success_curve(pred, gt, valid, visible=visible, exclude_invalid=exclude_invalid)[1].mean())


def precision_curve(pred, gt, valid=None, *, visible=None, exclude_invalid: bool = False,
                    normalized: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds, rates): fraction of frames with centre error <= threshold (px 0..50, or 0..0.5 normalised)."""
    e = _errors(pred, gt, valid, visible, exclude_invalid, normalized)
    thresholds = NORM_CENTER_THRESHOLDS if normalized else CENTER_THRESHOLDS
    return thresholds, (e[:, None] <= thresholds[None, :]).mean(0)


def precision(pred, gt, valid=None, px: float = 20.0, *, visible=None, exclude_invalid: bool = False) -> float:
    """Fraction of frames whose centre error is at most `px` pixels (OTB precision at 20 px)."""
    e = _errors(pred, gt, valid, visible, exclude_invalid, normalized=False)
    return float((e <= px).mean())


def normalized_precision(pred, gt, valid=None, thr: float = 0.2, *, visible=None,
                         exclude_invalid: bool = False) -> float:
    """Fraction of frames whose gt-size-normalised centre error is at most `thr` (TrackingNet/LaSOT NP)."""
    e = _errors(pred, gt, valid, visible, exclude_invalid, normalized=True)
    return float((e <= thr).mean())


def _valid_overlaps(pred, gt, valid, visible) -> np.ndarray:
    """IoU on frames with valid ground truth (GOT-10k scores only those; invalid predictions give 0)."""
    p, g, gt_ok, pred_ok = _prepare(pred, gt, valid, visible, exclude_invalid=False)
    return np.where(pred_ok, iou(p, g), 0.0)[gt_ok]


def average_overlap(pred, gt, valid=None, *, visible=None) -> float:
    """GOT-10k AO: mean IoU over the frames whose ground truth is valid (0.0 when there is none)."""
    o = _valid_overlaps(pred, gt, valid, visible)
    return float(o.mean()) if o.size else 0.0


def success_rate(pred, gt, thr: float = 0.5, valid=None, *, visible=None) -> float:
    """GOT-10k SR_thr: fraction of valid-gt frames with IoU strictly above `thr` (SR0.5, SR0.75)."""
    o = _valid_overlaps(pred, gt, valid, visible)
    return float((o > thr).mean()) if o.size else 0.0


@dataclass
class SequenceScores:
    """All figures of one sequence; the curves are kept so overall figures average them (pytracking)."""

    name: str
    frames: int
    success: np.ndarray  # (21,) success rates at OVERLAP_THRESHOLDS
    precision: np.ndarray  # (51,) at CENTER_THRESHOLDS
    norm_precision: np.ndarray  # (51,) at NORM_CENTER_THRESHOLDS
    ao: float
    sr50: float
    sr75: float
    toolkit_ious: np.ndarray  # IoUs the official GOT-10k toolkit pools: valid-gt frames after frame 0

    def summary(self) -> dict[str, float]:
        return {"auc": float(self.success.mean()), "precision": float(self.precision[20]),
                "norm_precision": float(self.norm_precision[20]), "ao": self.ao, "sr50": self.sr50,
                "sr75": self.sr75, "frames": self.frames}


def score_sequence(name: str, pred, gt, valid=None, *, visible=None, exclude_invalid: bool = False) -> SequenceScores:
    """Every metric of one sequence; `exclude_invalid` picks the invalid-frame convention of the curves."""
    kw = dict(visible=visible, exclude_invalid=exclude_invalid)
    o = _overlaps(pred, gt, valid, **kw)
    vo = _valid_overlaps(pred, gt, valid, visible)

    def skip_first(a):
        return None if a is None else np.asarray(a)[1:]

    toolkit = (_valid_overlaps(np.asarray(pred)[1:], np.asarray(gt)[1:], skip_first(valid), skip_first(visible))
               if len(o) > 1 and (valid is None or np.asarray(valid)[1:].any()) else np.zeros(0))
    return SequenceScores(
        name=name,
        frames=int(len(o)),
        success=(o[:, None] > OVERLAP_THRESHOLDS[None, :]).mean(0),
        precision=precision_curve(pred, gt, valid, **kw)[1],
        norm_precision=precision_curve(pred, gt, valid, normalized=True, **kw)[1],
        ao=float(vo.mean()) if vo.size else 0.0,
        sr50=float((vo > 0.5).mean()) if vo.size else 0.0,
        sr75=float((vo > 0.75).mean()) if vo.size else 0.0,
        toolkit_ious=toolkit,
    )


def summarize(scores: list[SequenceScores]) -> dict[str, float]:
    """Overall figures: means over sequences of the per-sequence curves (pytracking's convention).

    `got10k_ao/sr50/sr75` pool frames over all sequences, skipping frame 0, as the official GOT-10k
    toolkit does (it also clips boxes to the image before the IoU, which is not replicated here).
    """
    if not scores:
        raise DistilkitError("no sequences to summarise")
    success = np.mean([s.success for s in scores], axis=0)
    prec = np.mean([s.precision for s in scores], axis=0)
    norm = np.mean([s.norm_precision for s in scores], axis=0)
    return {"auc": float(success.mean()), "precision": float(prec[20]), "norm_precision": float(norm[20]),
            "ao": float(np.mean([s.ao for s in scores])), "sr50": float(np.mean([s.sr50 for s in scores])),
            "sr75": float(np.mean([s.sr75 for s in scores])), **_pooled(scores), "sequences": len(scores),
            "frames": int(sum(s.frames for s in scores))}


def _pooled(scores: list[SequenceScores]) -> dict[str, float]:
    ious = np.concatenate([s.toolkit_ious for s in scores])
    if not ious.size:
        return {"got10k_ao": 0.0, "got10k_sr50": 0.0, "got10k_sr75": 0.0}
    return {"got10k_ao": float(ious.mean()), "got10k_sr50": float((ious > 0.5).mean()),
            "got10k_sr75": float((ious > 0.75).mean())}
