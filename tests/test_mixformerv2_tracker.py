"""MixFormerV2Tracker on synthetic sequences: cropping, mapping back, clipping, online template update.

The model is a real tiny MixFormerV2 (its template cache is built and used every frame) whose box and
score outputs are replaced by an exact pixel-threshold detector on the de-normalised search crop. The
detector only sees the crop, so the tracker must crop around the right place, normalise correctly and
map boxes back exactly for the target to be followed; any error there shows as drift.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distilkit.errors import DistilkitError
from distilkit.trackers.mixformerv2 import MixFormerV2, MixFormerV2Tracker, build_model
from distilkit.trackers.mixformerv2.tracker import IMAGENET_MEAN, IMAGENET_STD

pytestmark = pytest.mark.isa_sensitive  # float results: rerun under .ci/avx2.env

H, W, SIDE = 200, 260, 20



class BrightTargetOracle(MixFormerV2):
    """Runs the real cached forward, then replaces boxes/score by where the bright target is in the crop."""

    def forward_search(self, search: torch.Tensor, **kwargs) -> dict:
        out = super().forward_search(search, **kwargs)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        pixels = (search * std + mean).mean(dim=1)  # back to [0, 1] grey
        boxes, scores = [], []
        for mask in pixels > 0.6:
            ys, xs = torch.nonzero(mask, as_tuple=True)
            if len(xs) == 0:
                boxes.append(torch.tensor([0.4, 0.4, 0.6, 0.6]))
                scores.append(-4.0)
                continue
            h, w = mask.shape
            boxes.append(torch.stack([xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h]).float())
            scores.append(4.0)
        out["boxes"] = torch.stack(boxes)
        if "score" in out:
            out["score"] = torch.tensor(scores)
        return out


def oracle(name: str) -> BrightTargetOracle:
    return BrightTargetOracle(build_model(name).config).eval()


def frame(x: float, y: float, visible: bool = True, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = (rng.random((H, W, 3)) * 90).astype(np.uint8)  # dark noise, below the detector threshold
    if visible:
        x0, y0 = int(round(x)), int(round(y))
        img[max(y0, 0):max(y0 + SIDE, 0), max(x0, 0):max(x0 + SIDE, 0)] = 235
    return img


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_tracker_follows_target_moving_in_a_straight_line() -> None:
    tracker = MixFormerV2Tracker(oracle("mixformerv2-s-tiny"), update_interval=7)
    xs, ys = np.linspace(15, 215, 31), np.linspace(20, 150, 31)  # ~8 px/frame, 240 px in total
    tracker.initialize(frame(xs[0], ys[0], seed=0), np.array([xs[0], ys[0], SIDE, SIDE]))
    ious = []
    for i in range(1, len(xs)):
        box, score = tracker.track(frame(xs[i], ys[i], seed=i))
        assert box.shape == (4,) and score > 0.9
        ious.append(iou(box, np.array([xs[i], ys[i], SIDE, SIDE])))
    # The window (4x the target) is 80 px wide, the path 240 px: without correct crops and mapping
    # back the target leaves the window within a few frames.
    assert min(ious) > 0.6 and float(np.mean(ious)) > 0.8, ious


def test_model_built_under_inference_mode_tracks_like_a_normal_one() -> None:
    """Inference tensors have no version counter; the template cache and prepacked weights must cope."""
    torch.manual_seed(0)
    normal = MixFormerV2Tracker(build_model("mixformerv2-s-tiny").eval())
    with torch.inference_mode():
        torch.manual_seed(0)
        deployed = MixFormerV2Tracker(build_model("mixformerv2-s-tiny").eval())
        results = []
        for tracker in (normal, deployed):
            tracker.initialize(frame(60, 50), np.array([60, 50, SIDE, SIDE]))
            results.append([tracker.track(frame(60 + 3 * i, 50 + 2 * i, seed=i)) for i in range(1, 4)])
    for (box_a, score_a), (box_b, score_b) in zip(*results):
        np.testing.assert_allclose(box_a, box_b, atol=1e-4)
        assert abs(score_a - score_b) < 1e-5


def test_online_template_takes_best_visible_frame_every_interval() -> None:
    model = oracle("mixformerv2-b-tiny")
    tracker = MixFormerV2Tracker(model, update_interval=4)
    tracker.initialize(frame(100, 80), np.array([100, 80, SIDE, SIDE]))
    initial = tracker.online.clone()
    cache_before = tracker.model._templates.layers[0].k.clone()
    for _ in range(3):
        tracker.track(frame(100, 80, visible=False))  # occluded: low score, no candidate
    assert tracker.best_score == -math.inf
    tracker.track(frame(100, 80, visible=False))  # frame 4: update with the initial template only
    assert torch.equal(tracker.online, initial)
    for i in range(4):
        tracker.track(frame(104 + 2 * i, 80, seed=i + 10))  # visible, high score: candidates
    assert not torch.equal(tracker.online, initial), "visible frames must replace the online template"
    assert not torch.equal(tracker.model._templates.layers[0].k, cache_before), "the template cache must be recomputed"
    assert tracker.best_score == -math.inf  # reset after the update


def test_model_without_score_head_keeps_its_templates_and_clips() -> None:
    tracker = MixFormerV2Tracker(oracle("mixformerv2-12l-tiny"), update_interval=1)
    tracker.initialize(frame(200, 150), np.array([200, 150, SIDE, SIDE]))
    initial = tracker.online.clone()
    for i in range(1, 16):  # run off the bottom-right corner of the image
        box, score = tracker.track(frame(200 + 7 * i, 150 + 5 * i, seed=i))
        assert math.isnan(score)
        assert box[0] <= W - 10 and box[1] <= H - 10 and box[0] >= 0 and box[1] >= 0
        assert box[2] >= 10 and box[3] >= 10
    assert torch.equal(tracker.online, initial)


def test_tracker_input_errors() -> None:
    model = build_model("mixformerv2-s-tiny")
    with pytest.raises(DistilkitError, match="do not match"):
        MixFormerV2Tracker(model, search_size=128)
    tracker = MixFormerV2Tracker(model)
    with pytest.raises(DistilkitError, match="initialize"):
        tracker.track(frame(10, 10))
    with pytest.raises(DistilkitError, match="positive"):
        tracker.initialize(frame(10, 10), np.array([10, 10, 0, 5]))
    with pytest.raises(DistilkitError, match="finite"):
        tracker.initialize(frame(10, 10), np.array([np.nan, 10, 5, 5]))
    with pytest.raises(DistilkitError, match="outside the 260×200 image"):
        tracker.initialize(frame(10, 10), np.array([W + 5, 10, 20, 20]))
    with pytest.raises(DistilkitError, match="outside"):
        tracker.initialize(frame(10, 10), np.array([-30, 10, 20, 20]))
    tracker.initialize(frame(10, 10), np.array([-10, -10, 20, 20]))  # partly outside is a valid start
    with pytest.raises(DistilkitError, match="uint8"):
        tracker.track(frame(10, 10).astype(np.float32) / 255)  # would be a black crop
    with pytest.raises(DistilkitError, match="H×W×3"):
        tracker.track(frame(10, 10)[..., 0])
    with pytest.raises(DistilkitError, match="numpy"):
        tracker.track(torch.zeros(H, W, 3, dtype=torch.uint8))


@pytest.mark.parametrize("kwargs, message", [
    (dict(search_factor=-2.0), "search_factor must be > 0"),
    (dict(template_factor=0), "template_factor must be > 0"),
    (dict(update_interval=2.5), "update_interval must be an int, got 2.5"),
    (dict(score_threshold=float("nan")), "score_threshold must be a finite number"),
])
def test_tracker_options_are_checked(kwargs, message) -> None:
    with pytest.raises(DistilkitError, match=message):
        MixFormerV2Tracker(build_model("mixformerv2-s-tiny"), **kwargs)


@pytest.mark.parametrize("box", [[1, 2, 3], None, "abc", [[1, 2], [3, 4]]])
def test_malformed_initial_boxes_are_refused(box) -> None:
    with pytest.raises(DistilkitError, match="initial box must be 4 numbers"):
        MixFormerV2Tracker(build_model("mixformerv2-s-tiny")).initialize(frame(10, 10), box)


def test_only_mixformerv2_models_are_tracked() -> None:
    with pytest.raises(DistilkitError, match="needs a MixFormerV2 model, got Linear"):
        MixFormerV2Tracker(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("prepack", [True, False])
def test_tracker_follows_weights_loaded_with_assign_between_and_within_sequences(prepack) -> None:
    """The prepacked copy shares the model's tensors; new tensor objects must reach it too."""
    torch.manual_seed(0)
    model = build_model("mixformerv2-s-tiny", score_head=True).eval()
    other = build_model("mixformerv2-s-tiny", score_head=True).eval().state_dict()
    frames = [frame(40 + 4 * i, 30 + 2 * i, seed=i) for i in range(4)]
    start = np.array([40, 30, SIDE, SIDE])
    tracker = MixFormerV2Tracker(model, prepack=prepack)
    model.load_state_dict(other, assign=True)
    fresh = MixFormerV2Tracker(model, prepack=prepack)
    for t in (tracker, fresh):
        t.initialize(frames[0], start)
    for f in frames[1:3]:
        np.testing.assert_allclose(tracker.track(f)[0], fresh.track(f)[0], atol=1e-5)
    model.load_state_dict(build_model("mixformerv2-s-tiny", score_head=True).state_dict(), assign=True)
    now = MixFormerV2Tracker(model, prepack=prepack)  # mid-sequence: same templates, new weights
    now.initialize(frames[0], start)
    now.online, now.state, now.frame_id = tracker.online.clone(), tracker.state.copy(), tracker.frame_id
    now.templates = now.model.set_templates(now.template, now.online)
    np.testing.assert_allclose(tracker.track(frames[3])[0], now.track(frames[3])[0], atol=1e-5)


def test_trackers_sharing_one_model_keep_their_own_templates() -> None:
    """One tracker per target on one model (prepack=False, as on GPU): each runs on its own cache."""
    torch.manual_seed(0)
    model = build_model("mixformerv2-s-tiny", score_head=True).eval()
    frames = [frame(40 + 4 * i, 30 + 2 * i, seed=i) for i in range(6)]
    kwargs = dict(prepack=False, update_interval=2, score_threshold=-1.0)  # online updates every 2 frames
    alone = MixFormerV2Tracker(model, **kwargs)
    alone.initialize(frames[0], np.array([40, 30, SIDE, SIDE]))
    expected = [alone.track(f) for f in frames[1:]]
    a, b = MixFormerV2Tracker(model, **kwargs), MixFormerV2Tracker(model, **kwargs)
    a.initialize(frames[0], np.array([40, 30, SIDE, SIDE]))
    b.initialize(frames[0], np.array([150, 120, 2 * SIDE, SIDE]))  # another target, other templates
    for f, (box, score) in zip(frames[1:], expected):
        got_box, got_score = a.track(f)
        b.track(f)
        np.testing.assert_allclose(got_box, box, atol=1e-6)
        assert abs(got_score - score) < 1e-6


def test_device_templates_and_dtype_errors_are_named_and_a_double_model_tracks() -> None:
    model = build_model("mixformerv2-s-tiny")
    with pytest.raises(DistilkitError, match="cannot track on device 'gpu'"):
        MixFormerV2Tracker(model, device="gpu")
    cfg = model.config
    t, s = torch.zeros(1, 3, cfg.template_size, cfg.template_size), torch.zeros(1, 3, cfg.search_size, cfg.search_size)
    with pytest.raises(DistilkitError, match="search: expected a normalised torch.float32 image tensor .*got torch.float64"):
        model(t, t, s.double())
    model.set_templates(t, t)
    with pytest.raises(DistilkitError, match="templates= takes what set_templates returned, got str"):
        model.forward_search(s, templates="abc")
    tracker = MixFormerV2Tracker(build_model("mixformerv2-s-tiny").double(), prepack=False)  # crops follow the weights
    tracker.initialize(frame(40, 30), np.array([40, 30, SIDE, SIDE]))
    assert np.isfinite(tracker.track(frame(44, 32))[0]).all()
