"""Pure image functions: masks, feathered compositing, colour matching, crops and canvases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from journeyd.domain.errors import Unprocessable
from journeyd.imaging.canvas import pan_canvas, zoom_canvas
from journeyd.imaging.colour import match_colour
from journeyd.imaging.composite import composite, feather
from journeyd.imaging.crop import context_box
from journeyd.imaging.masks import mask_from_image

RNG = np.random.default_rng(7)


def test_white_on_black_and_white_on_transparent_mean_the_same() -> None:
    black = np.zeros((20, 20), np.uint8)
    black[5:10, 5:10] = 255
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[5:10, 5:10] = 255
    dark_but_opaque = np.zeros((20, 20, 4), np.uint8)
    dark_but_opaque[..., 3] = 255
    dark_but_opaque[5:10, 5:10] = 255
    expected = np.zeros((20, 20), bool)
    expected[5:10, 5:10] = True
    for pixels in (black, rgba, dark_but_opaque):
        np.testing.assert_array_equal(mask_from_image(Image.fromarray(pixels), (20, 20)), expected)


def test_masks_are_resized_to_the_parent_and_empty_ones_refused() -> None:
    small = np.zeros((10, 10), np.uint8)
    small[0:5, 0:5] = 255
    big = mask_from_image(Image.fromarray(small), (100, 60))
    assert big.shape == (60, 100) and big[:25, :45].all() and not big[35:, 55:].any()
    with pytest.raises(Unprocessable, match="selects nothing"):
        mask_from_image(Image.fromarray(np.zeros((10, 10), np.uint8)), (10, 10))
    transparent_white = np.full((10, 10, 4), 255, np.uint8)
    transparent_white[..., 3] = 0
    with pytest.raises(Unprocessable):
        mask_from_image(Image.fromarray(transparent_white), (10, 10))


def test_feather_is_one_inside_zero_beyond_and_ramps_between() -> None:
    mask = np.zeros((80, 80), bool)
    mask[30:50, 30:50] = True
    weights = feather(mask, 10).dense()
    assert (weights[mask] == 1).all()
    assert weights[40, 55] < weights[40, 52] < 1 and weights[40, 70] == 0
    assert (weights[:15] == 0).all()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 20))
def test_composite_keeps_every_pixel_beyond_the_feather(seed: int, feather_px: int) -> None:
    rng = np.random.default_rng(seed)
    parent = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    candidate = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    mask = np.zeros((48, 64), bool)
    mask[rng.integers(0, 30) :, rng.integers(0, 40) :][:10, :12] = True
    how = feather(mask, feather_px)
    weights = how.dense()
    out = composite(parent, candidate, how)
    np.testing.assert_array_equal(out[weights == 0], parent[weights == 0])
    np.testing.assert_array_equal(out[mask], candidate[mask])


def test_colour_matching_undoes_a_shift_and_leaves_agreement_alone() -> None:
    parent = RNG.integers(60, 200, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[20:40, 20:40] = True
    ring = feather(mask, 8).ramp  # as render measures it
    np.testing.assert_array_equal(match_colour(parent, parent, ring), parent)
    shifted = np.clip(parent.astype(int) + np.array([30, -20, 10]), 0, 255).astype(np.uint8)  # a VAE-like cast
    fixed = match_colour(shifted, parent, ring)
    assert np.abs(fixed[ring].astype(int) - parent[ring]).mean() < 2
    assert np.abs(shifted[ring].astype(int) - parent[ring]).mean() > 15


def test_context_box_surrounds_the_mask_and_stays_inside() -> None:
    mask = np.zeros((200, 300), bool)
    mask[10:30, 280:295] = True
    x0, y0, x1, y1 = context_box(mask, field=0.5)
    assert 0 <= x0 <= 280 and 295 <= x1 <= 300 and 0 <= y0 <= 10 and 30 <= y1 <= 200
    assert x1 - x0 >= 150 and y1 - y0 >= 100
    assert context_box(np.ones((50, 40), bool)) == (0, 0, 40, 50)


def test_zoom_and_pan_canvases_keep_the_parent_where_it_was() -> None:
    image = RNG.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    canvas = zoom_canvas(image, 2.0)
    x, y, w, h = canvas.box
    assert canvas.image.shape[:2] == (80, 120) and (w, h) == (60, 40)
    np.testing.assert_array_equal(canvas.image[y : y + h, x : x + w], image)
    assert canvas.mask.sum() == 80 * 120 - 40 * 60
    square = zoom_canvas(image, 1.0, square=True)
    assert square.image.shape[0] == square.image.shape[1] == 64
    wide = zoom_canvas(image, 1.5, aspect=(2, 1))
    assert wide.image.shape[1] == 2 * wide.image.shape[0]
    left = pan_canvas(image, "left")
    assert left.image.shape[:2] == (40, 92) and left.box == (32, 0, 60, 40)  # +half, rounded up to 8
    np.testing.assert_array_equal(left.image[:, 32:], image)
    up = pan_canvas(image, "up")
    assert up.image.shape[:2] == (64, 60) and up.box[1] == 24
