"""Training-pair augmentation (distilkit.data.augment, PairSampler(augment=...)): the official grayscale,
brightness and flip, deterministic per (seed, epoch, index), and nothing at all by default."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distilkit.data import PairSampler, SyntheticTracking, denormalize_image, normalize_image
from distilkit.data.augment import DRAWS, Augment, brightness_range, mirror_box, to_grayscale
from distilkit.errors import DistilkitError

KEYS = ("template", "online_template", "search", "search_box", "label", "visible")


@pytest.fixture(scope="module")
def data():
    return SyntheticTracking(4, 40, seed=0, image_size=(160, 120))


def _sampler(data, augment=None, **kw):
    args = dict(template_size=32, search_size=64, samples_per_epoch=12, seed=3, augment=augment)
    args.update(kw)
    return PairSampler(data, **args)


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in KEYS)


def _crops(item: dict) -> list[np.ndarray]:
    return [denormalize_image(item[k]) for k in ("template", "online_template", "search")]


def test_default_and_all_zero_leave_samples_untouched(data):
    """No augment, Augment() and explicit zeros give the same samples, positives and negatives; each image is
    exactly today's normalisation of a uint8 crop."""
    for negative_prob in (0.0, 0.5):
        plain = _sampler(data, negative_prob=negative_prob)
        for augment in (Augment(), Augment(grayscale=0.0, brightness=0.0, flip=0.0)):
            other = _sampler(data, augment, negative_prob=negative_prob)
            assert all(_same(plain[i], other[i]) for i in range(len(plain)))
    item = plain[0]
    for key in ("template", "search"):
        crop = denormalize_image(item[key])
        expected = (crop.astype(np.float32) / 255.0 - np.array([0.485, 0.456, 0.406], np.float32)) \
            / np.array([0.229, 0.224, 0.225], np.float32)
        np.testing.assert_array_equal(item[key].numpy(), expected.transpose(2, 0, 1))


def test_augmenting_never_changes_which_sample_it_is(data):
    """The augmentation draws come after the sample's: with brightness only, boxes and labels are those of the
    un-augmented sampler, and a crop darkened by f is the plain crop × f."""
    plain, bright = _sampler(data, negative_prob=0.5), _sampler(data, Augment(brightness=0.5), negative_prob=0.5)
    for i in range(len(plain)):
        a, b = plain[i], bright[i]
        assert torch.equal(a["search_box"], b["search_box"]) and torch.equal(a["label"], b["label"])
        ratio = denormalize_image(b["search"]).astype(float).sum() / denormalize_image(a["search"]).astype(float).sum()
        assert 0.5 - 0.02 <= ratio <= 1.5 + 0.02


def test_same_seed_epoch_index_same_sample_and_epochs_differ(data):
    augment = Augment(grayscale=0.5, brightness=0.3, flip=0.5)
    s, t = _sampler(data, augment), _sampler(data, augment)
    assert all(_same(s[i], t[i]) for i in range(len(s)))
    loader = torch.utils.data.DataLoader(s, batch_size=4, num_workers=2)
    got = torch.cat([b["search"] for b in loader])
    assert torch.equal(got, torch.stack([s[i]["search"] for i in range(len(s))]))
    first = [s[i] for i in range(len(s))]
    s.set_epoch(1)
    assert not all(_same(s[i], first[i]) for i in range(len(s)))
    s.set_epoch(0)
    assert all(_same(s[i], first[i]) for i in range(len(s)))


def test_flip_mirrors_the_search_crop_and_its_box(data):
    """A mirrored search crop is the plain crop reversed left-right and its box x → 1 - x: the box still
    frames the same pixels; a negative's zero box stays zero."""
    plain, flipped = _sampler(data, negative_prob=0.3), _sampler(data, Augment(flip=1.0), negative_prob=0.3)
    seen_negative = False
    for i in range(len(plain)):
        a, b = plain[i], flipped[i]
        for ca, cb in zip(_crops(a), _crops(b)):
            np.testing.assert_array_equal(cb, ca[:, ::-1])
        x1, y1, x2, y2 = a["search_box"].tolist()
        if a["label"] == 1:
            assert b["search_box"].tolist() == pytest.approx([1 - x2, y1, 1 - x1, y2], abs=1e-7)
            side = 64

            def cut(crop, box):
                return crop[round(box[1] * side):round(box[3] * side), round(box[0] * side):round(box[2] * side)]

            np.testing.assert_array_equal(cut(_crops(b)[2], b["search_box"].tolist()),
                                          cut(_crops(a)[2], [x1, y1, x2, y2])[:, ::-1])
        else:
            seen_negative = True
            assert b["search_box"].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert seen_negative


def test_each_crop_flips_on_its_own_draw():
    """flip is per crop (the official joint flip and per-crop flip at 0.5 compose to that); the box follows
    the search crop's."""
    crops = [np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) + 10 * k for k in range(3)]
    box = np.array([0.1, 0.2, 0.4, 0.9])
    draws = np.array([0.9, 0.5, 0.5, 0.5, 0.1, 0.9, 0.9])  # template mirrored, online and search not
    out, factors, got = Augment(flip=0.5).apply(crops, box, True, draws)
    np.testing.assert_array_equal(out[0], crops[0][:, ::-1])
    assert out[1] is crops[1] and out[2] is crops[2] and got is box and factors == [1.0, 1.0, 1.0]
    _, _, got = Augment(flip=0.5).apply(crops, box, True, np.array([0.9, 0.5, 0.5, 0.5, 0.9, 0.9, 0.1]))
    np.testing.assert_allclose(got, [0.6, 0.2, 0.9, 0.9])
    assert mirror_box(mirror_box(box)).tolist() == pytest.approx(box.tolist())
    rates = np.array([[Augment(flip=0.5).apply(crops, box, True, d)[0][k] is not crops[k] for k in range(3)]
                      for d in np.random.default_rng(0).random((2000, DRAWS))])
    assert np.allclose(rates.mean(0), 0.5, atol=0.04)
    assert abs(np.corrcoef(rates[:, 0], rates[:, 2])[0, 1]) < 0.08  # template and search independent


def test_grayscale_is_joint_across_the_three_crops(data):
    """One draw turns all three crops gray (BT.601 luma, as OpenCV's RGB2GRAY), or none; at p = 0.5 both occur."""
    s = _sampler(data, Augment(grayscale=0.5), samples_per_epoch=24)
    gray_flags = []
    for i in range(len(s)):
        grays = [bool((c[..., 0] == c[..., 1]).all() and (c[..., 1] == c[..., 2]).all()) for c in _crops(s[i])]
        assert len(set(grays)) == 1, grays
        gray_flags.append(grays[0])
    assert any(gray_flags) and not all(gray_flags)
    image = np.random.default_rng(1).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    gray = to_grayscale(image)
    expected = np.rint(image[..., 0] * 0.299 + image[..., 1] * 0.587 + image[..., 2] * 0.114)
    assert gray.dtype == np.uint8 and gray.shape == image.shape
    assert np.abs(gray[..., 0].astype(int) - expected).max() == 0 and (gray == gray[..., :1]).all()
    cv2 = pytest.importorskip("cv2")
    assert np.abs(gray[..., 0].astype(int) - cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)).max() <= 1


def test_brightness_factor_range_and_clamping():
    """Factors ~ U[max(0, 1 - b), 1 + b] per crop (torchvision ColorJitter); scaled pixels clamp at 255."""
    assert brightness_range(0.2) == (0.8, 1.2) and brightness_range(1.5) == (0.0, 2.5)
    crops = [np.full((2, 2, 3), 200, np.uint8)] * 3
    factors = np.array([Augment(brightness=0.2).apply(crops, np.zeros(4), False, d)[1]
                        for d in np.random.default_rng(0).random((3000, DRAWS))])
    assert factors.min() >= 0.8 and factors.max() < 1.2
    assert abs(factors.min() - 0.8) < 0.01 and abs(factors.max() - 1.2) < 0.01
    assert np.allclose(factors.mean(0), 1.0, atol=0.01) and abs(np.corrcoef(factors[:, 0], factors[:, 2])[0, 1]) < 0.06
    bright = denormalize_image(normalize_image(crops[0], 1.5))
    dark = denormalize_image(normalize_image(crops[0], 0.5))
    assert (bright == 255).all() and (dark == 100).all()
    assert torch.equal(normalize_image(crops[0], 1.0), normalize_image(crops[0]))


@pytest.mark.parametrize("kwargs, message", [
    ({"grayscale": 1.5}, "augment grayscale is a probability in \\[0, 1\\], got 1.5"),
    ({"flip": -0.1}, "augment flip must be >= 0"),
    ({"brightness": 11.0}, "augment brightness must be <= 10, got 11"),
    ({"brightness": float("nan")}, "augment brightness"),
    ({"flip": True}, "augment flip"),
])
def test_bad_values_are_one_line_errors(kwargs, message):
    with pytest.raises(DistilkitError, match=message) as err:
        Augment(**kwargs)
    assert "\n" not in str(err.value)


def test_sampler_refuses_anything_but_an_augment(data):
    with pytest.raises(DistilkitError, match="augment must be a distilkit.data.Augment, got dict"):
        _sampler(data, {"flip": 0.5})
