"""PairSampler: shapes, determinism across workers and epochs, crop/target-box consistency, negatives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from distilkit.data import PairSampler, Sequence, SyntheticTracking, crop_around, denormalize_image, jitter_box
from distilkit.errors import DistilkitError


@pytest.fixture(scope="module")
def data():
    return SyntheticTracking(4, 40, seed=0, image_size=(160, 120))


def _sampler(data, **kw):
    args = dict(template_size=32, search_size=64, samples_per_epoch=8, seed=3)
    args.update(kw)
    return PairSampler(data, **args)


def test_item_shapes_and_ranges(data):
    item = _sampler(data)[0]
    assert set(item) == {"template", "online_template", "search", "search_box", "label", "visible"}
    assert item["template"].shape == (3, 32, 32) and item["online_template"].shape == (3, 32, 32)
    assert item["search"].shape == (3, 64, 64) and item["search_box"].shape == (4,)
    assert all(v.dtype == torch.float32 for v in item.values())
    box = item["search_box"]
    assert (box >= 0).all() and (box <= 1).all() and box[2] > box[0] and box[3] > box[1]
    assert item["label"] == 1.0 and item["visible"] == 1.0
    assert item["search"].mean().abs() < 3  # ImageNet-normalised, not 0..255


def test_deterministic_per_epoch_and_index_and_with_workers(data):
    s = _sampler(data)
    a = [s[i] for i in range(len(s))]
    loader = torch.utils.data.DataLoader(s, batch_size=4, num_workers=2, shuffle=False)
    batches = list(loader)
    got = torch.cat([b["search"] for b in batches])
    np.testing.assert_array_equal(got.numpy(), torch.stack([x["search"] for x in a]).numpy())
    np.testing.assert_array_equal(torch.cat([b["search_box"] for b in batches]).numpy(),
                                  torch.stack([x["search_box"] for x in a]).numpy())
    s.set_epoch(1)
    assert not torch.equal(s[0]["search"], a[0]["search"])
    s.set_epoch(0)
    assert torch.equal(s[0]["search"], a[0]["search"])


def test_search_box_matches_the_crop(data):
    """Cutting the crop at search_box reproduces the image content inside the gt box."""
    seq = data[1]
    rng = np.random.default_rng(0)
    for j in np.flatnonzero(seq.visible)[::7]:
        box = seq.boxes[j]
        jittered = jitter_box(box, rng, 4.5, 0.5)
        crop, window = crop_around(seq.frame(j), jittered, 4.5, 128)
        x1, y1, x2, y2 = window.box_to_crop(box) * 128
        if x1 < 0 or y1 < 0 or x2 > 128 or y2 > 128 or (x2 - x1) < 8:
            continue
        got = Image.fromarray(crop).crop((x1, y1, x2, y2)).resize((24, 24), Image.BILINEAR)
        want = Image.fromarray(seq.frame(j)).crop((box[0], box[1], box[0] + box[2], box[1] + box[3]))
        want = want.resize((24, 24), Image.BILINEAR)
        diff = np.abs(np.asarray(got, float) - np.asarray(want, float)).mean()
        assert diff < 12, diff
        np.testing.assert_allclose(window.box_from_crop(window.box_to_crop(box)), box, atol=1e-9)


def test_unjittered_search_box_is_centred_with_the_context_factor(data):
    """No jitter: the target sits at the crop centre and covers 1/factor of the side (sqrt of area)."""
    s = _sampler(data, center_jitter=0.0, scale_jitter=0.0, search_factor=4.0, samples_per_epoch=6)
    for i in range(len(s)):
        x1, y1, x2, y2 = s[i]["search_box"].numpy().astype(float)
        np.testing.assert_allclose([(x1 + x2) / 2, (y1 + y2) / 2], 0.5, atol=0.02)
        assert np.sqrt((x2 - x1) * (y2 - y1)) == pytest.approx(1 / 4.0, rel=0.05)


def test_sampler_search_content_matches_the_gt_region():
    """A one-frame video: the sampler's crop, cut at search_box, shows the gt region of that frame."""
    from distilkit.data import Sequence

    seq0 = SyntheticTracking(1, 2, seed=4, image_size=(200, 160))[0]
    box = seq0.boxes[0]
    seq = Sequence("one", [seq0.frame(0)] * 2, np.stack([box, box]), np.ones(2, bool))
    s = PairSampler([seq], 32, 128, center_jitter=2.0, scale_jitter=0.2, samples_per_epoch=5, seed=1)
    want = Image.fromarray(seq.frame(0)).crop((box[0], box[1], box[0] + box[2], box[1] + box[3])).resize((16, 16))
    for i in range(len(s)):
        item = s[i]
        x1, y1, x2, y2 = (item["search_box"].numpy() * 128).tolist()
        got = Image.fromarray(denormalize_image(item["search"])).crop((x1, y1, x2, y2)).resize((16, 16))
        assert np.abs(np.asarray(got, float) - np.asarray(want, float)).mean() < 15


def test_jitter_statistics():
    rng = np.random.default_rng(0)
    box = np.array([100.0, 50.0, 40.0, 10.0])
    out = np.stack([jitter_box(box, rng, 4.5, 0.5) for _ in range(4000)])
    log_scale = np.log(out[:, 2:] / box[2:])
    np.testing.assert_allclose(log_scale.std(0), 0.5, atol=0.03)
    centre_shift = out[:, :2] + out[:, 2:] / 2 - (box[:2] + box[2:] / 2)
    bound = 0.5 * 4.5 * np.sqrt(out[:, 2] * out[:, 3])
    assert (np.abs(centre_shift) <= bound[:, None] + 1e-9).all()
    assert np.all(jitter_box(box, rng, 0.0, 0.0) == box)


def test_negatives_have_zero_label_and_box(data):
    s = _sampler(data, negative_prob=1.0)
    for i in range(4):
        item = s[i]
        assert item["label"] == 0.0 and item["visible"] == 0.0 and torch.all(item["search_box"] == 0)
    mixed = _sampler(data, negative_prob=0.5, samples_per_epoch=40)
    labels = [float(mixed[i]["label"]) for i in range(40)]
    assert 5 < sum(labels) < 35


def test_impossible_negatives_fail_at_construction():
    frames = [np.zeros((60, 80, 3), np.uint8)] * 5
    boxes = np.tile([20.0, 20.0, 10.0, 10.0], (5, 1))
    lone = Sequence("lone", frames, boxes, np.ones(5, bool))
    _sampler([lone])  # positives alone are fine
    with pytest.raises(DistilkitError, match="negative samples need a second sequence"):
        _sampler([lone], negative_prob=0.5)
    hidden = Sequence("hidden", frames, boxes, np.array([True, True, False, True, True]))
    assert _sampler([hidden], negative_prob=1.0)[0]["label"] == 0.0  # its invisible frame serves
    never_seen = Sequence("never-seen", frames, boxes, np.zeros(5, bool))  # a second video, but no visible target
    with pytest.raises(DistilkitError, match="negative samples need a second sequence with a visible target"):
        _sampler([lone, never_seen], negative_prob=1.0)


def test_bad_arguments(data):
    with pytest.raises(DistilkitError, match="negative_prob"):
        _sampler(data, negative_prob=1.5)
    with pytest.raises(DistilkitError, match="non-empty"):
        PairSampler([], 32, 64)


@pytest.mark.parametrize("kwargs, message", [
    (dict(search_factor=0), "search_factor must be > 0"),
    (dict(template_factor=-2.0), "template_factor must be > 0"),
    (dict(template_size=0), "template_size must be >= 1"),
    (dict(template_size=32.7), "template_size must be an int, got 32.7"),
    (dict(center_jitter=float("nan")), "center_jitter must be a finite number"),
    (dict(center_jitter=float("inf")), "center_jitter must be a finite number"),
    (dict(scale_jitter=-0.1), "scale_jitter must be >= 0"),
    (dict(seed=-1), "seed must be >= 0"),
])
def test_bad_arguments_fail_at_construction_not_in_a_worker(data, kwargs, message):
    with pytest.raises(DistilkitError, match=message):
        _sampler(data, **kwargs)
    with pytest.raises(DistilkitError, match="epoch must be >= 0"):
        _sampler(data).set_epoch(-1)


def test_positives_always_show_the_target_even_when_jitter_exceeds_the_context():
    """search_factor 2 < center_jitter 4.5: many jittered crops miss the target; they are drawn again."""
    sampler = _sampler(SyntheticTracking(4, 40, seed=1, image_size=(160, 120)), search_factor=2.0, samples_per_epoch=60)
    boxes = torch.stack([sampler[i]["search_box"] for i in range(len(sampler))])
    assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()


@pytest.mark.parametrize("factor", [0, -3, float("nan")])
def test_crop_side_refuses_factors_that_would_give_a_one_pixel_window(factor):
    from distilkit.data.crop import crop_side

    with pytest.raises(DistilkitError, match="crop context factor must be (a finite number|> 0)"):
        crop_side(np.array([10.0, 10.0, 20.0, 20.0]), factor)


def _flat_dataset(grey: int, count: int) -> list[Sequence]:
    frames = [np.full((40, 40, 3), grey, np.uint8)] * 3
    return [Sequence(f"g{grey}-{i}", frames, np.tile([12.0, 12.0, 16.0, 16.0], (3, 1)), np.ones(3, bool))
            for i in range(count)]


@pytest.mark.parametrize("weights, share_low, share_high", [("sequences", 0.05, 0.16), ("equal", 0.43, 0.57)])
def test_dataset_weights_draw_by_sequence_count_or_equally(weights, share_low, share_high):
    """Two datasets of 9 and 1 sequences: by sequence count the small one gets 1/10 of the draws, equally 1/2."""
    big, small = _flat_dataset(50, 9), _flat_dataset(200, 1)
    kw = dict(template_size=8, search_size=16, samples_per_epoch=400, seed=7, center_jitter=0.5)
    if weights != "sequences":
        kw["dataset_weights"] = weights  # the default is today's behaviour, by sequence count
    sampler = PairSampler([big, small], **kw)
    draws = [int(denormalize_image(sampler[i]["template"]).max()) for i in range(len(sampler))]
    share = np.mean([d > 100 for d in draws])
    assert share_low < share < share_high
    again = PairSampler([big, small], **kw)
    assert all(torch.equal(sampler[i]["search"], again[i]["search"]) for i in (0, 17, 399))  # per (seed, epoch, index)


def test_equal_weights_skip_empty_datasets_and_unknown_weights_fail():
    sampler = PairSampler([_flat_dataset(50, 2), []], 8, 16, samples_per_epoch=20, dataset_weights="equal")
    assert sampler.p_datasets.tolist() == [1.0, 0.0]
    assert all(sampler[i]["label"] == 1.0 for i in range(len(sampler)))
    with pytest.raises(DistilkitError, match="dataset_weights must be one of sequences, equal, got 'uniform'"):
        PairSampler([_flat_dataset(50, 2)], 8, 16, dataset_weights="uniform")
