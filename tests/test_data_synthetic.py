"""Synthetic tracking videos: determinism, split separation, exact boxes, occlusion flags, cache."""

from __future__ import annotations

import numpy as np
import pytest

from distilkit.data import Sequence, SyntheticTracking
from distilkit.data.synthetic import TEST_PHOTOS, TRAIN_PHOTOS, _shape_mask
from distilkit.errors import DistilkitError


def test_same_seed_same_frames_and_boxes():
    a, b = SyntheticTracking(3, 30, seed=5), SyntheticTracking(3, 30, seed=5)
    for i in range(3):
        sa, sb = a[i], b[i]
        np.testing.assert_array_equal(sa.boxes, sb.boxes)
        np.testing.assert_array_equal(sa.visible, sb.visible)
        for j in (0, 17, 29):
            np.testing.assert_array_equal(sa.frame(j), sb.frame(j))
    other = SyntheticTracking(3, 30, seed=6)[0]
    assert not np.array_equal(other.boxes, a[0].boxes)


def test_sequence_type_and_shapes():
    ds = SyntheticTracking(2, 20, seed=0, image_size=(160, 120))
    seq = ds[1]
    assert isinstance(seq, Sequence) and len(ds) == 2 and len(seq) == 20
    assert seq.name == "synthetic-train-0001" and seq.dataset == "synthetic"
    assert seq.boxes.shape == (20, 4) and seq.visible.shape == (20,) and seq.visible.dtype == bool
    frame = seq.frame(3)
    assert frame.shape == (120, 160, 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(seq.frames[3], frame)
    with pytest.raises(IndexError):
        ds[2]


def test_splits_use_disjoint_photos_and_differ():
    assert not set(TRAIN_PHOTOS) & set(TEST_PHOTOS)
    train, test = SyntheticTracking(2, 10, seed=0, split="train"), SyntheticTracking(2, 10, seed=0, split="test")
    assert not np.array_equal(train[0].frame(0), test[0].frame(0))
    test_backgrounds = {id(test.scene(i).background) for i in range(2)}
    train_backgrounds = {id(train.scene(i).background) for i in range(2)}
    assert not test_backgrounds & train_backgrounds
    with pytest.raises(DistilkitError, match="split"):
        SyntheticTracking(2, 10, split="val")


def test_boxes_inside_image_when_visible_and_tight_on_the_target():
    ds = SyntheticTracking(12, 60, seed=1)
    W, H = ds.image_size
    for i in range(len(ds)):
        seq = ds[i]
        b = seq.boxes[seq.visible]
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
        assert (b[:, 0] + b[:, 2] <= W).all() and (b[:, 1] + b[:, 3] <= H).all()
        assert (b[:, 2] >= 6).all() and (b[:, 3] >= 6).all()
    for shape in ("rect", "ellipse", "rounded"):
        for w, h in ((6, 6), (31, 17), (64, 9)):
            m = _shape_mask(shape, w, h)
            assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any()  # tight box


def test_target_pixels_are_where_the_box_says():
    """Render the scene without occluders/distractors vs with the target: the difference lies in the box."""
    ds = SyntheticTracking(4, 40, seed=2)
    for i in range(4):
        scene = ds.scene(i)
        j = int(np.flatnonzero(scene.visible_fraction == 1.0)[0])
        x, y, w, h = scene.target.boxes[j]
        full = scene.render(j)
        target = scene.target
        scene.target = type(target)(target.texture, target.shape, target.boxes, np.zeros_like(target.active))
        try:
            without = scene.render(j)
        finally:
            scene.target = target
        changed = np.argwhere((full != without).any(2))
        assert changed.size
        assert changed[:, 1].min() >= x and changed[:, 1].max() < x + w
        assert changed[:, 0].min() >= y and changed[:, 0].max() < y + h


def test_occluded_frames_are_flagged_invisible():
    ds = SyntheticTracking(30, 100, seed=0)
    found = False
    for i in range(len(ds)):
        seq = ds[i]
        frac = seq.attributes["visible_fraction"]
        np.testing.assert_array_equal(seq.visible, frac >= 0.1)
        if (~seq.visible).any():
            found = True
            scene = ds.scene(i)
            j = int(np.flatnonzero(~seq.visible)[0])
            x, y, w, h = scene.target.boxes[j]
            cover = [o for o in scene.occluders if o.active[j]]
            assert cover, "an invisible frame must have an active occluder over the target"
            ox, oy, ow, oh = cover[0].boxes[j]
            assert ox < x + w and x < ox + ow and oy < y + h and y < oy + oh
    assert found, "30 sequences of 100 frames should contain a full occlusion"


def test_cache_dir_round_trip(tmp_path):
    fresh = SyntheticTracking(1, 12, seed=3)[0]
    cached = SyntheticTracking(1, 12, seed=3, cache_dir=tmp_path)
    first = cached[0]
    assert len(list(tmp_path.glob("*.npz"))) == 1
    again = cached[0]
    np.testing.assert_array_equal(first.boxes, fresh.boxes)
    np.testing.assert_array_equal(again.frame(7), fresh.frame(7))
    np.testing.assert_array_equal(again.visible, fresh.visible)


def test_names_match_the_sequences_without_building_them(monkeypatch) -> None:
    data = SyntheticTracking(num_sequences=3, length=4, seed=1)
    monkeypatch.setattr(SyntheticTracking, "scene", lambda self, i: pytest.fail("names built a scene"))
    names = data.names
    monkeypatch.undo()
    assert names == [data[i].name for i in range(3)] == ["synthetic-train-0000", "synthetic-train-0001", "synthetic-train-0002"]
