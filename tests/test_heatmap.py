"""Colour mapping, figure sizes and augmentations (onnxlrp.heatmap, onnxlrp.augment)."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
from PIL import Image

from onnxlrp import augment, heatmap


def test_zero_is_white():
    rgb = heatmap.colorize(np.zeros((3, 4)), vmax=1.0)
    assert np.array_equal(rgb, np.ones((3, 4, 3)))
    rgb = heatmap.colorize(np.array([[0.0, 2.0, -1.0]]))  # default vmax = max |R|
    assert np.array_equal(rgb[0, 0], [1.0, 1.0, 1.0])


def test_positive_is_red_negative_is_blue():
    rgb = heatmap.colorize(np.array([[1.0, 0.5, -0.5, -1.0]]), vmax=1.0)[0]
    assert np.allclose(rgb[0], [1, 0, 0])  # +vmax: pure red
    assert np.allclose(rgb[1], [1, 0.5, 0.5])  # half: light red
    assert np.allclose(rgb[2], [0.5, 0.5, 1])  # -half: light blue
    assert np.allclose(rgb[3], [0, 0, 1])  # -vmax: pure blue
    for value, hue in ((0.3, 0.0), (-0.3, 2 / 3)):
        h, s, _ = colorsys.rgb_to_hsv(*heatmap.colorize(np.array([[value]]), vmax=1.0)[0, 0])
        assert s > 0 and h == pytest.approx(hue)


def test_scale_is_symmetric_and_clipped():
    heat = np.array([[3.0, -1.0, 0.0, 1.5]])
    rgb = heatmap.colorize(heat)
    neg = heatmap.colorize(-heat)
    assert np.allclose(rgb[..., 0], neg[..., 2]) and np.allclose(rgb[..., 2], neg[..., 0])
    assert np.allclose(rgb[0, 1], [2 / 3, 2 / 3, 1])  # -1 on the scale +-3
    assert np.allclose(heatmap.colorize(np.array([[10.0, -10.0]]), vmax=2.0)[0], [[1, 0, 0], [0, 0, 1]])
    assert heatmap.symmetric_vmax(np.array([-4.0, 1.0])) == 4.0
    assert heatmap.symmetric_vmax(np.zeros(5)) == 1.0  # never 0
    values = np.linspace(-100, 1, 101)
    assert heatmap.symmetric_vmax(values, percentile=50) == pytest.approx(np.percentile(np.abs(values), 50))


def test_channel_sum():
    r = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    assert np.allclose(heatmap.channel_sum(r), r.sum(0))
    assert heatmap.channel_sum(r[0]).shape == (3, 4)


def test_figure_sizes(tmp_path):
    heat = np.random.default_rng(0).normal(size=(8, 8))
    heatmap.render_explanation(tmp_path / "e.png", heatmap.display_image(np.zeros((3, 8, 8))), heat, "t")
    assert Image.open(tmp_path / "e.png").size == heatmap.explanation_figure_size()
    for count, title in ((1, ""), (10, "ten maps"), (25, "a long title " * 12)):
        heatmap.render_grid(tmp_path / "g.png", [heat] * count, title)
        rows, cols = heatmap.grid_shape(count)
        assert rows * cols >= count > (rows - 1) * cols
        assert Image.open(tmp_path / "g.png").size == heatmap.grid_figure_size(count, title=title)
    rows = [[("image", np.zeros((8, 8)), "in"), ("heat", heat, "h")], [("heat", -heat, "n")]]
    heatmap.render_panels(tmp_path / "p.png", rows, "title")
    assert Image.open(tmp_path / "p.png").size == heatmap.panels_figure_size(2, 2, "title")


def test_bare_heatmap_png(tmp_path):
    heat = np.array([[1.0, -1.0], [0.0, 0.5]])
    heatmap.save_heatmap_png(tmp_path / "h.png", heat, scale=3)
    img = np.asarray(Image.open(tmp_path / "h.png"))
    assert img.shape == (6, 6, 3)
    assert (
        tuple(img[0, 0]) == (255, 0, 0) and tuple(img[0, 3]) == (0, 0, 255) and tuple(img[3, 0]) == (255,) * 3
    )


def test_flip_and_hue():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    assert np.array_equal(augment.flip(img)[:, 0], img[:, -1])
    assert np.array_equal(augment.flip(augment.flip(img)), img)
    assert np.array_equal(augment.hue_shift(img, 1.0), img)
    assert np.array_equal(augment.hue_shift(augment.hue_shift(img, 0.3), 0.7), img)
    red = np.zeros((1, 1, 3), np.uint8)
    red[..., 0] = 200
    assert augment.hue_shift(red, 1 / 3)[0, 0].tolist() == [0, 200, 0]
    grey = rng.integers(0, 256, size=(4, 4), dtype=np.uint8)
    assert np.array_equal(augment.hue_shift(grey), grey)
    x = rng.random((50, 3))
    hsv = augment.rgb_to_hsv(x)
    assert np.allclose(hsv, [colorsys.rgb_to_hsv(*p) for p in x])
    assert np.allclose(augment.hsv_to_rgb(hsv), x)
    assert [t for t, _ in augment.augment(img, augment.parse_augmentations("flip,hue"))] == [
        "orig",
        "flip",
        "hue",
    ]
    with pytest.raises(ValueError):
        augment.parse_augmentations("flip,rotate")
