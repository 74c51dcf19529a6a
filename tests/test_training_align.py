"""ArcFace alignment: the similarity fit, the warp's pixel convention, and MICA's blob layout."""
from __future__ import annotations

import numpy as np
import pytest

from onflame.training import ARCFACE_TEMPLATE_112, PHOTO_RULES, photo_rules
from onflame.training.align import (
    align_face,
    apply_transform,
    arcface_blob,
    arcface_template,
    similarity_transform,
    warp_crop,
)


def test_template_values():
    t = arcface_template(112)
    assert np.allclose(t[0], (38.2946, 51.6963)) and np.allclose(t[4], (70.7299, 92.2041))
    assert np.allclose(arcface_template(224), 2 * t)
    with pytest.raises(ValueError):
        arcface_template(100)


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 500, (5, 2))
    angle, scale, shift = 0.4, 0.37, np.array([12.0, -30.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = scale * src @ rot.T + shift
    m = similarity_transform(src, dst)
    assert np.allclose(m[:, :2], scale * rot) and np.allclose(m[:, 2], shift)
    assert np.allclose(apply_transform(m, src), dst)


def test_similarity_never_reflects():
    src = np.array([[0, 0], [10, 0], [0, 10], [10, 10], [5, 7.0]])
    mirrored = src * [-1, 1]
    m = similarity_transform(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


def test_warp_integer_shift_is_exact():
    img = np.random.default_rng(1).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    m = np.array([[1.0, 0, -17], [0, 1.0, -9]])  # crop pixel (u, v) = photo pixel (u + 17, v + 9)
    assert np.array_equal(warp_crop(img, m, 112), img[9:121, 17:129])


def test_warp_half_scale_samples_between_pixels():
    img = np.random.default_rng(2).integers(0, 256, (100, 100, 3), dtype=np.uint8)
    # crop pixel (u, v) = photo point (2u + 0.5, 2v + 0.5): the mean of a 2×2 block under bilinear sampling
    m = np.array([[0.5, 0, -0.25], [0, 0.5, -0.25]])
    block = img.reshape(50, 2, 50, 2, 3).astype(float).mean((1, 3))
    assert np.abs(warp_crop(img, m, 50).astype(float) - block).max() <= 1.0


def test_warp_fills_black_outside():
    img = np.full((50, 50, 3), 200, dtype=np.uint8)
    out = warp_crop(img, np.array([[1.0, 0, 80], [0, 1.0, 0]]), 112)
    assert (out[:, :70] == 0).all() and (out[:45, 85:] == 200).all()


def test_blob_layout_on_a_known_image():
    """A photo already aligned (keypoints = template): the blob is the formula applied to its pixels."""
    yy, xx = np.mgrid[0:112, 0:112]
    img = np.stack([xx * 2, yy * 2, np.full_like(xx, 77)], -1).astype(np.uint8)  # R = 2x, G = 2y, B = 77
    aligned = align_face(img, arcface_template(112))
    crop = aligned.crop112
    assert np.abs(crop.astype(int) - img).max() <= 1  # identity up to float round-off in the fit
    blob = aligned.blob
    assert blob.shape == (3, 112, 112) and blob.dtype == np.float32 and blob.flags.c_contiguous
    assert blob[0, 5, 10] == pytest.approx((20 - 127.5) / 127.5, abs=1 / 127.5)  # channel 0 is red = 2x at x = 10
    assert blob[1, 5, 10] == pytest.approx((10 - 127.5) / 127.5, abs=1 / 127.5)  # channel 1 is green = 2y at y = 5
    assert np.allclose(blob[2], (77 - 127.5) / 127.5, atol=1 / 127.5)
    assert np.allclose(blob, (crop.transpose(2, 0, 1).astype(np.float64) - 127.5) / 127.5, atol=1e-6)
    assert blob.min() >= -1 and blob.max() <= 1
    assert aligned.crop224.shape == (224, 224, 3)
    with pytest.raises(ValueError):
        arcface_blob(np.zeros((100, 100, 3), np.uint8))


def test_photo_rules_table():
    assert photo_rules("florence").min_score == 0.85 and "PTZ-Outdoor" in photo_rules("FLORENCE").exclude
    assert photo_rules("FLORENCE").sample_per_actor == 1000
    assert photo_rules("STIRLING").min_score == 0.75 and photo_rules("STIRLING").actor_from == "filename"
    assert "Spring2003range" in PHOTO_RULES["FRGC"].exclude
    assert PHOTO_RULES["BP4D"].sample_per_actor == 100
    assert photo_rules("SOMETHING_NEW").min_score == 0.0
    assert len(ARCFACE_TEMPLATE_112) == 5
