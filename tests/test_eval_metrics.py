"""Metrics against hand-computed answers and an independent plain reimplementation of pytracking's rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from distilkit.errors import DistilkitError
from distilkit.eval import (
    auc, average_overlap, center_error, iou, normalized_precision, precision, score_sequence, success_curve,
    success_rate, summarize,
)


def _gt(n=10):
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(10, 60, (n, 2))
    return np.concatenate([xy, wh], 1)


def test_perfect_tracker_scores_twenty_of_twenty_one():
    gt = _gt()
    thr, rates = success_curve(gt, gt)
    assert len(thr) == 21 and thr[0] == 0.0 and thr[-1] == 1.0
    assert np.all(rates[:20] == 1.0) and rates[20] == 0.0  # IoU 1.0 is not strictly greater than 1.0
    assert auc(gt, gt) == pytest.approx(20 / 21)
    assert precision(gt, gt) == 1.0 and normalized_precision(gt, gt) == 1.0
    assert average_overlap(gt, gt) == pytest.approx(1.0) and success_rate(gt, gt, 0.75) == 1.0


def test_iou_exactly_half_fails_the_half_threshold():
    gt = np.array([[0.0, 0.0, 10.0, 10.0]])
    pred = np.array([[0.0, 0.0, 10.0, 5.0]])  # inside gt, half its area: IoU exactly 0.5
    assert iou(pred, gt)[0] == 0.5
    thr, rates = success_curve(pred, gt)
    assert np.all(rates[thr < 0.5] == 1.0) and np.all(rates[thr >= 0.5] == 0.0)
    assert auc(pred, gt) == pytest.approx(10 / 21)
    assert success_rate(pred, gt, 0.5) == 0.0 and success_rate(pred, gt, 0.45) == 1.0


def test_iou_disjoint_and_shifted():
    gt = np.array([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    pred = np.array([[20.0, 20.0, 10.0, 10.0], [5.0, 0.0, 10.0, 10.0]])
    np.testing.assert_allclose(iou(pred, gt), [0.0, 50 / 150])


def test_precision_threshold_is_inclusive_and_normalised_per_axis():
    gt = np.array([[0.0, 0.0, 100.0, 50.0]] * 3)
    pred = gt + np.array([[20.0, 0, 0, 0], [20.01, 0, 0, 0], [0, 10.0, 0, 0]])
    np.testing.assert_allclose(center_error(pred, gt), [20.0, 20.01, 10.0])
    assert precision(pred, gt) == pytest.approx(2 / 3)
    # normalised: dx / w = 0.2, 0.2001, dy / h = 0.2 -> first and third pass at thr 0.2
    np.testing.assert_allclose(center_error(pred, gt, normalized=True), [0.2, 0.2001, 0.2])
    assert normalized_precision(pred, gt) == pytest.approx(2 / 3)


def test_invalid_ground_truth_counts_as_failure_or_is_excluded():
    gt = np.array([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 0.0, 0.0], [0, 0, 10, 10], [0, 0, 10, -1]], dtype=float)
    pred = np.array([[0.0, 0.0, 10.0, 10.0]] * 4)
    assert auc(pred, gt) == pytest.approx(0.5 * 20 / 21)
    assert precision(pred, gt) == 0.5 and normalized_precision(pred, gt) == 0.5
    assert auc(pred, gt, exclude_invalid=True) == pytest.approx(20 / 21)
    assert precision(pred, gt, exclude_invalid=True) == 1.0
    assert normalized_precision(pred, gt, exclude_invalid=True) == 1.0
    # GOT-10k AO / SR score only frames with valid ground truth
    assert average_overlap(pred, gt) == pytest.approx(1.0) and success_rate(pred, gt, 0.5) == 1.0


def test_visible_mask_marks_frames_invalid_and_valid_mask_selects_frames():
    gt = _gt(4)
    pred = gt.copy()
    visible = np.array([True, False, True, True])
    assert auc(pred, gt, visible=visible) == pytest.approx(0.75 * 20 / 21)
    assert auc(pred, gt, visible=visible, exclude_invalid=True) == pytest.approx(20 / 21)
    pred[3] += [500, 500, 0, 0]
    valid = np.array([True, True, True, False])
    assert auc(pred, gt, valid) == pytest.approx(20 / 21)
    assert precision(pred, gt, valid) == 1.0
    assert average_overlap(pred, gt, visible=visible) == pytest.approx(2 / 3)


def test_invalid_predictions_fail():
    gt = _gt(3)
    pred = gt.copy()
    pred[1] = [np.nan] * 4
    pred[2, 2] = 0.0
    assert auc(pred, gt) == pytest.approx(20 / 21 / 3)
    assert precision(pred, gt) == pytest.approx(1 / 3)
    assert average_overlap(pred, gt) == pytest.approx(1 / 3)


def test_bad_shapes_raise():
    with pytest.raises(DistilkitError, match="shape"):
        auc(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(DistilkitError, match="3 predicted boxes for 4"):
        auc(np.ones((3, 4)), np.ones((4, 4)))
    with pytest.raises(DistilkitError, match="no frame left"):
        auc(np.ones((2, 4)), np.zeros((2, 4)), exclude_invalid=True)


def test_clipped_prediction_from_crop_clip_box():
    from distilkit.data import clip_box

    gt = np.array([[0.0, 0.0, 50.0, 40.0]])
    pred = clip_box(np.array([-30.0, -20.0, 80.0, 60.0]), (240, 320), margin=10.0)[None]
    np.testing.assert_allclose(pred[0], [0.0, 0.0, 50.0, 40.0])
    assert auc(pred, gt) == pytest.approx(20 / 21)
    pred = clip_box(np.array([400.0, 300.0, 20.0, 20.0]), (240, 320), margin=10.0)
    np.testing.assert_allclose(pred, [310.0, 230.0, 10.0, 10.0])


# ---- independent reimplementation, written plainly, of pytracking's per-frame rules -------------
def _plain_iou(p, g):
    ix = max(0.0, min(p[0] + p[2], g[0] + g[2]) - max(p[0], g[0]))
    iy = max(0.0, min(p[1] + p[3], g[1] + g[3]) - max(p[1], g[1]))
    inter = ix * iy
    return inter / (p[2] * p[3] + g[2] * g[3] - inter)


def _plain_scores(pred, gt, exclude):
    thresholds = [i * 0.05 for i in range(21)]
    ok = [g[2] > 0 and g[3] > 0 for g in gt]
    rows = [i for i in range(len(gt)) if ok[i] or not exclude]
    n = len(rows)
    success = [sum(1 for i in rows if ok[i] and _plain_iou(pred[i], gt[i]) > t) / n for t in thresholds]

    def centre(b):
        return b[0] + 0.5 * (b[2] - 1.0), b[1] + 0.5 * (b[3] - 1.0)  # pytracking's pixel-centre formula

    def dist(i, norm):
        (px, py), (gx, gy) = centre(pred[i]), centre(gt[i])
        if norm:
            return math.hypot(px / gt[i][2] - gx / gt[i][2], py / gt[i][3] - gy / gt[i][3])
        return math.hypot(px - gx, py - gy)

    prec = sum(1 for i in rows if ok[i] and dist(i, False) <= 20) / n
    nprec = sum(1 for i in rows if ok[i] and dist(i, True) <= 0.2) / n
    ious = [_plain_iou(pred[i], gt[i]) for i in range(len(gt)) if ok[i]]
    return sum(success) / 21, prec, nprec, sum(ious) / len(ious)


@pytest.mark.parametrize("exclude", [False, True])
def test_matches_plain_reimplementation_on_random_data(exclude):
    rng = np.random.default_rng(7)
    seqs = []
    for _ in range(5):
        n = 60
        gt = np.concatenate([rng.uniform(0, 300, (n, 2)), rng.uniform(5, 80, (n, 2))], 1)
        gt[rng.random(n) < 0.1, 2:] = 0.0
        pred = gt + np.concatenate([rng.normal(0, 12, (n, 2)), rng.normal(0, 8, (n, 2))], 1)
        pred[:, 2:] = np.abs(pred[:, 2:]) + 1.0
        seqs.append((pred, gt))
    per_seq = []
    for k, (pred, gt) in enumerate(seqs):
        a, p, np_, ao = _plain_scores(pred.tolist(), gt.tolist(), exclude)
        assert auc(pred, gt, exclude_invalid=exclude) == pytest.approx(a, abs=1e-12)
        assert precision(pred, gt, exclude_invalid=exclude) == pytest.approx(p, abs=1e-12)
        assert normalized_precision(pred, gt, exclude_invalid=exclude) == pytest.approx(np_, abs=1e-12)
        assert average_overlap(pred, gt) == pytest.approx(ao, abs=1e-12)
        per_seq.append(score_sequence(f"s{k}", pred, gt, exclude_invalid=exclude))
    overall = summarize(per_seq)
    expected = [_plain_scores(p.tolist(), g.tolist(), exclude) for p, g in seqs]
    assert overall["auc"] == pytest.approx(np.mean([e[0] for e in expected]), abs=1e-12)
    assert overall["precision"] == pytest.approx(np.mean([e[1] for e in expected]), abs=1e-12)
    assert overall["norm_precision"] == pytest.approx(np.mean([e[2] for e in expected]), abs=1e-12)
    assert overall["sequences"] == 5
    assert overall["frames"] == sum(len(g) if not exclude else int((g[:, 2] > 0).sum()) for _, g in seqs)


def test_got10k_toolkit_pooling_skips_first_frame_and_pools_frames():
    gt = np.array([[0.0, 0.0, 10.0, 10.0]] * 3)
    bad = gt + [[0, 0, 0, 0], [50, 0, 0, 0], [50, 0, 0, 0]]  # frame 0 right (init), then lost
    long_gt = np.array([[0.0, 0.0, 10.0, 10.0]] * 5)
    a = score_sequence("a", bad, gt)
    b = score_sequence("b", long_gt, long_gt)
    assert a.ao == pytest.approx(1 / 3)  # pytracking: frame 0 counts
    overall = summarize([a, b])
    assert overall["ao"] == pytest.approx((1 / 3 + 1) / 2)  # mean over sequences
    assert overall["got10k_ao"] == pytest.approx(4 / 6)  # pooled frames 1.. : 0,0,1,1,1,1
    assert overall["got10k_sr50"] == pytest.approx(4 / 6)
