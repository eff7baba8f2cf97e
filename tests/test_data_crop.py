"""crop_around: the official crop (cv2.copyMakeBorder + cv2.resize, bilinear) without the padded window."""

import math
import time

import numpy as np
import pytest
from skimage import data as skdata

from distilkit.data import crop_around
from distilkit.errors import DistilkitError


def official_crop(image: np.ndarray, box: np.ndarray, factor: float, output_size: int) -> np.ndarray:
    """MixFormerV2's `sample_target` (processing_utils.py), written from its description: window of side
    ceil(sqrt(w·h)·factor) at round(centre - side/2), zero border, cv2.resize to output_size.
    (The official code pads one extra row/column at the right/bottom edge, hiding the image's last
    one; that off-by-one is not reproduced, here or in distilkit.)"""
    cv2 = pytest.importorskip("cv2")  # in the test extras; only these comparisons need it
    x, y, w, h = map(float, box)
    side = math.ceil(math.sqrt(w * h) * factor)
    x1, y1 = round(x + 0.5 * w - side * 0.5), round(y + 0.5 * h - side * 0.5)
    x2, y2 = x1 + side, y1 + side
    left, top = max(0, -x1), max(0, -y1)
    right, bottom = max(x2 - image.shape[1], 0), max(y2 - image.shape[0], 0)
    inside = image[y1 + top: y2 - bottom, x1 + left: x2 - right]
    padded = cv2.copyMakeBorder(inside, top, bottom, left, right, cv2.BORDER_CONSTANT) if inside.size else \
        np.zeros((side, side, 3), np.uint8)
    return cv2.resize(padded, (output_size, output_size))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.ascontiguousarray(skdata.astronaut()[::2, ::2])  # 256 x 256 real photograph


def test_matches_the_official_crop_to_one_grey_level(photo):
    rng = np.random.default_rng(0)
    for _ in range(150):  # boxes inside, across every edge, off the image; up- and downscaling
        w, h = rng.uniform(3, 180, 2)
        box = np.array([rng.uniform(-w, photo.shape[1]), rng.uniform(-h, photo.shape[0]), w, h])
        factor, size = float(rng.choice([2.0, 4.5, 5.0])), int(rng.choice([112, 128, 224, 288]))
        ours, window = crop_around(photo, box, factor, size)
        theirs = official_crop(photo, box, factor, size)
        assert ours.shape == theirs.shape == (size, size, 3) and ours.dtype == np.uint8
        assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1, (box, factor, size)
        assert window.side == math.ceil(math.sqrt(w * h) * factor)


@pytest.mark.parametrize("side_to_output", [1.0, 2.0, 0.5])
def test_exact_scales_match_too(photo, side_to_output):
    """Same size (a plain copy), exact 2x down (cv2 switches to area averaging) and 2x up."""
    box = np.array([40.0, 50.0, 64.0, 64.0])  # factor 2: side 128
    size = int(128 / side_to_output)
    ours, _ = crop_around(photo, box, 2.0, size)
    assert np.abs(ours.astype(int) - official_crop(photo, box, 2.0, size).astype(int)).max() <= 1
    if side_to_output == 1.0:
        np.testing.assert_array_equal(ours, photo[18:146, 8:136])  # window at x 8, y 18


def test_no_antialiasing_when_downscaling():
    """A one-pixel checkerboard shrunk 4x stays a checkerboard sampled between pixel pairs (bilinear,
    as cv2): an antialiasing filter (PIL's) would average it to flat grey."""
    board = (np.indices((256, 256)).sum(0) % 2 * 255).astype(np.uint8)[..., None].repeat(3, 2)
    crop, _ = crop_around(board, np.array([64.0, 64.0, 128.0, 128.0]), 2.0, 64)
    np.testing.assert_array_equal(crop, official_crop(board, np.array([64.0, 64.0, 128.0, 128.0]), 2.0, 64))


def test_a_window_far_larger_than_the_image_is_not_allocated(photo):
    """The padded window of a huge box would take petabytes; only the sampled pixels are read."""
    box = np.array([-5e6, -5e6, 1e7, 1e7])  # centred near the image, side 4.5e7 px
    start = time.perf_counter()
    crop, window = crop_around(photo, box, 4.5, 224)
    assert time.perf_counter() - start < 5.0
    assert window.side == 45_000_000 and crop.shape == (224, 224, 3)
    # the whole 256-px image falls between two output pixels' samples or on one: almost all black
    assert (crop.sum(axis=2) == 0).mean() > 0.99


@pytest.mark.parametrize("image, size, message", [
    (np.zeros((0, 8, 3), np.uint8), 16, r"expected an image with pixels, got shape \(0, 8, 3\)"),
    (np.zeros((8, 0, 3), np.uint8), 16, r"expected an image with pixels, got shape \(8, 0, 3\)"),
    (np.zeros((8, 8, 3), np.uint8), 0, "crop output_size must be >= 1, got 0"),
    (np.zeros((8, 8, 3), np.uint8), 2.5, "crop output_size must be an int, got 2.5"),
])
def test_bad_inputs_are_one_line_errors(image, size, message):
    with pytest.raises(DistilkitError, match=message):
        crop_around(image, np.array([1.0, 1.0, 4.0, 4.0]), 2.0, size)
