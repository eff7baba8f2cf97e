"""Tracking evaluation: pytracking/OTB metrics, the evaluation loop, result files, success plots, baselines."""

from __future__ import annotations

from distilkit.eval.baselines import ConstantBoxTracker, OpenCVTracker, make_baseline, opencv_available
from distilkit.eval.evaluate import (
    Results, SequenceResult, check_unique_names, combine_results, evaluate, load_results, plot_success,
)
from distilkit.eval.metrics import (
    CENTER_THRESHOLDS, NORM_CENTER_THRESHOLDS, OVERLAP_THRESHOLDS, SequenceScores, auc, average_overlap,
    center_error, iou, normalized_precision, precision, precision_curve, score_sequence, success_curve,
    success_rate, summarize,
)

__all__ = [
    "ConstantBoxTracker", "OpenCVTracker", "make_baseline", "opencv_available",
    "Results", "SequenceResult", "check_unique_names", "combine_results", "evaluate", "load_results", "plot_success",
    "CENTER_THRESHOLDS", "NORM_CENTER_THRESHOLDS", "OVERLAP_THRESHOLDS", "SequenceScores", "auc",
    "average_overlap", "center_error", "iou", "normalized_precision", "precision", "precision_curve",
    "score_sequence", "success_curve", "success_rate", "summarize",
]
