"""Tests of the figures: image grids and PNG files written by ebgen.plots."""
from __future__ import annotations

import numpy as np
from PIL import Image

from ebgen.plots import image_grid, save_energy_histogram, save_image_grid, save_points_plot
from ebgen.toy2d import get_toy_set


def test_image_grid_shapes_and_values():
    grey = np.full((4, 1, 8, 8), 1.0, dtype=np.float32)
    g = image_grid(grey)
    assert g.shape == (2 * 10 + 2, 2 * 10 + 2) and g.dtype == np.uint8
    assert g[2, 2] == 255 and g[0, 0] == 0
    rgb = np.random.default_rng(0).uniform(-1, 1, (16, 3, 8, 8)).astype(np.float32)
    assert image_grid(rgb).shape == (4 * 10 + 2, 4 * 10 + 2, 3)
    assert image_grid(rgb, nrow=8, padding=0).shape == (16, 64, 3)
    assert image_grid(-np.ones((3, 1, 4, 4)))[1:, 1:].max() == 0  # -1 → black, 3 in a 2×2 grid


def test_save_image_grid_png(tmp_path):
    x = np.random.default_rng(0).uniform(-1, 1, (16, 3, 8, 8)).astype(np.float32)
    path = save_image_grid(x, tmp_path / "sub" / "grid.png")
    with Image.open(path) as img:
        assert img.size == (42, 42) and img.mode == "RGB"
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]  # no temp files left


def test_points_plot_and_histogram(tmp_path):
    import matplotlib.pyplot as plt

    ring = get_toy_set("8gaussians")
    x = ring.sample(500, np.random.default_rng(0))
    p = save_points_plot(x, tmp_path / "points.png", energy_fn=lambda q: -ring.log_density(q),
                         data=x, title="ring")
    with Image.open(p) as img:
        img.verify()
    with Image.open(p) as img:
        assert img.format == "PNG" and 300 <= img.size[0] <= 600
    save_points_plot(x, tmp_path / "plain.png")
    h = save_energy_histogram({"data": np.random.randn(100), "samples": np.random.randn(50) + 2,
                               "noise": np.array([np.inf, 1.0])}, tmp_path / "hist.png",
                              title="energies")
    with Image.open(h) as img:
        assert img.format == "PNG"
    assert plt.get_fignums() == []
    assert sorted(f.name for f in tmp_path.iterdir()) == ["hist.png", "plain.png", "points.png"]


def test_written_files_are_readable_by_others(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = save_image_grid(np.zeros((4, 1, 8, 8), np.float32), tmp_path / "g.png")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
