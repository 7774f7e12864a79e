"""Tests of the points metrics: mode coverage and shares, the grid KL, the KDE, the report."""
from __future__ import annotations

import math

import numpy as np

import pytest

from ebgen.metrics.points import (default_box, energy_grid, evaluate_points, grid_kl,
                             kde_log_density, mode_metrics, mode_shares, radial_profile)
from ebgen.toy2d import TOY_SETS, get_toy_set

RING = get_toy_set("8gaussians")
BOX = default_box(RING.sample(5000, np.random.default_rng(1)))


def test_mode_metrics_exact_samples_cover_all_modes():
    m = mode_metrics(RING.sample(2500, np.random.default_rng(0)), RING)
    assert m["modes"] == 8 and m["num_modes"] == 8
    assert m["high_quality"] >= 0.99


def test_mode_metrics_three_modes_and_noise():
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 3, 1000)
    x = RING.centers[idx] + RING.std * rng.standard_normal((1000, 2))
    assert mode_metrics(x, RING)["modes"] == 3
    noise = rng.uniform([BOX[0], BOX[2]], [BOX[1], BOX[3]], size=(2500, 2))
    assert mode_metrics(noise, RING)["high_quality"] < 0.1
    bad = np.full((10, 2), np.nan)
    assert mode_metrics(bad, RING) == {"modes": 0, "num_modes": 8, "high_quality": 0.0}


@pytest.mark.parametrize("name", [n for n, t in TOY_SETS.items() if t.has_modes])
def test_exact_samples_get_every_mode_its_weight(name):
    toy = TOY_SETS[name]
    x = toy.sample(20000, np.random.default_rng(1))
    shares = mode_shares(x, toy)
    assert 0.9 < shares["share_ratio_min"] <= shares["share_ratio_max"] < 1.1
    assert mode_metrics(x, toy)["high_quality"] > 0.98


def test_mode_shares_see_a_missing_and_a_doubled_mode():
    unequal = get_toy_set("unequal")
    x = unequal.sample(20000, np.random.default_rng(0))
    idx, _ = unequal.assign(x)
    light = x[idx == 5]                       # the 5 % mode
    shares = mode_shares(np.concatenate([x[idx != 5], light, light]), unequal)
    assert 1.8 < shares["share_ratios"][5] < 2.1
    assert mode_shares(x[idx != 5], unequal)["share_ratio_min"] == 0.0


def test_default_box_is_square_with_margin():
    x0, x1, y0, y1 = default_box(np.array([[0.0, 0.0], [2.0, 1.0]]))
    assert math.isclose(x1 - x0, y1 - y0) and math.isclose(x1 - x0, 3.0)
    assert x0 < 0 and x1 > 2 and y0 < 0 and y1 > 1


def test_energy_grid_cell_centres_and_orientation():
    xs, ys, e = energy_grid(lambda p: p[:, 0] + 10 * p[:, 1], (0, 1, 0, 2), 4)
    np.testing.assert_allclose(xs, [0.125, 0.375, 0.625, 0.875])
    np.testing.assert_allclose(ys, [0.25, 0.75, 1.25, 1.75])
    assert e.shape == (4, 4)
    np.testing.assert_allclose(e[2, 1], xs[1] + 10 * ys[2], rtol=1e-6)


def test_grid_kl_values():
    exact = grid_kl(lambda p: -RING.log_density(p), RING.log_density, BOX, 300)
    assert exact < 0.01
    broad = grid_kl(lambda p: 0.5 * (p ** 2).sum(1), RING.log_density, BOX, 300)
    assert broad > 1.0
    huge = grid_kl(lambda p: 1e6 * (p.astype(np.float64) ** 2).sum(1), RING.log_density, BOX, 300)
    assert math.isfinite(huge) and huge > 100
    diverged = grid_kl(lambda p: np.full(len(p), np.nan), RING.log_density, BOX, 100)
    assert math.isfinite(diverged)


def test_kde_integrates_to_one():
    data = get_toy_set("25gaussians").sample(1500, np.random.default_rng(0))
    box = default_box(data, margin=0.5)
    xs, ys, logp = energy_grid(kde_log_density(data), box, 150)
    cell = (xs[1] - xs[0]) * (ys[1] - ys[0])
    assert abs(np.exp(logp).sum() * cell - 1.0) < 0.02
    iso = kde_log_density(data, bandwidth=0.1)
    _, _, logq = energy_grid(iso, box, 150)
    assert abs(np.exp(logq).sum() * cell - 1.0) < 0.02


def test_evaluate_points_exact_model():
    rng = np.random.default_rng(0)
    rep = evaluate_points(lambda n: RING.sample(n, rng), lambda p: -RING.log_density(p),
                          "8gaussians", None, num_samples=5000, resolution=300)
    gen, energy = rep["generator"], rep["energy"]
    assert gen["modes"] == 8 and gen["num_modes"] == 8 and gen["high_quality"] > 0.98
    assert rep["kl_data_energy"] < 0.05 and rep["density"] == "exact"
    assert rep["num_samples"] == 5000 and rep["resolution"] == 300 and len(rep["box"]) == 4
    for view in (gen, energy):  # exact samples of both views sit at the data's floor
        assert view["mmd2_ratio"] < 1.6 and view["mmd2_local_ratio"] < 1.6
        assert view["precision_ratio"] > 0.95 and view["recall_ratio"] > 0.95
        assert 0.85 < view["share_ratio_min"] <= view["share_ratio_max"] < 1.15
        assert view["radial_tv"] < 0.05 and len(view["radial_shares"]) == 4
    assert rep["data_high_quality"] > 0.98


def test_evaluate_points_sees_sharp_samples_and_a_floor_of_mass():
    """The failure modes HQ % hides: samples too sharp per mode, and energy mass off the modes."""
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 8, 5000)
    sharp = RING.centers[idx] + 0.5 * RING.std * rng.standard_normal((5000, 2))

    def floored(p):  # the exact density plus 10 % of its mass spread over the box
        area = (BOX[1] - BOX[0]) * (BOX[3] - BOX[2])
        return -np.logaddexp(np.log(0.9) + RING.log_density(p), np.log(0.1 / area))

    rep = evaluate_points(lambda n: sharp[:n], floored, "8gaussians", None, num_samples=5000,
                          resolution=300)
    assert rep["generator"]["high_quality"] > 0.99           # HQ % rewards it ...
    assert rep["generator"]["mmd2_local_ratio"] > 3          # ... the local MMD does not
    assert rep["generator"]["recall_ratio"] < 0.85
    assert rep["generator"]["radial_tv"] > 0.3               # ... nor the radial profile
    # 10 % of the energy's mass off the modes: 10 % fewer precise samples (a diffuse floor
    # moves the global MMD little, 1.1-1.6× at these sizes; precision and HQ are what see it).
    assert rep["energy"]["precision_ratio"] < 0.93 and rep["energy"]["high_quality"] < 0.92


@pytest.mark.parametrize("name", ["8gaussians", "anisotropic", "unequal"])
def test_radial_profile_of_exact_samples_matches_the_data(name):
    toy = get_toy_set(name)
    rng = np.random.default_rng(3)
    profile = radial_profile(toy.sample(20_000, rng), toy, toy.sample(20_000, rng))
    assert profile["radial_tv"] < 0.02
    assert abs(sum(profile["radial_shares"]) - 1) < 1e-3
    # A lone Gaussian mode's exact shares when no reference is given: 39.3/47.1/12.4/1.1 %.
    assert radial_profile(toy.sample(100, rng), toy)["radial_data"] == pytest.approx(
        [0.3935, 0.4712, 0.1242, 0.0111], abs=1e-4)


def test_radial_profile_sees_wells_sharp_at_the_centre_and_heavy_in_the_tails():
    """Laplace-shaped modes (energy growing linearly with the distance, as a piecewise-linear
    net's wells do) of the data's variance: right centres, right spread, HQ % off by a little,
    but too much mass within 1σ and beyond 3σ."""
    rng = np.random.default_rng(4)
    idx = rng.integers(0, 8, 20_000)
    laplace = RING.centers[idx] + RING.std / math.sqrt(2) * rng.laplace(size=(20_000, 2))
    profile = radial_profile(laplace, RING, RING.sample(20_000, rng))
    shares, data = profile["radial_shares"], profile["radial_data"]
    assert shares[0] > data[0] + 0.05 and shares[3] > 2 * data[3]
    assert profile["radial_tv"] > 0.08
    # Non-finite samples are the worst spread of all: the last band.
    assert radial_profile(np.full((4, 2), np.nan), RING)["radial_shares"] == [0, 0, 0, 1]


def test_evaluate_points_kde_for_user_data():
    data = RING.sample(2000, np.random.default_rng(0))
    kde = kde_log_density(data)
    good = evaluate_points(lambda n: data[:n], lambda p: -kde(p), None, data, resolution=150,
                           num_samples=1000, data_label="ring.npy")
    bad = evaluate_points(lambda n: data[:n], lambda p: 0.5 * (p ** 2).sum(1), None, data,
                          resolution=150, num_samples=1000)
    assert good["density"] == "kde" and "modes" not in good["generator"]
    assert good["data"] == "ring.npy" and "data_high_quality" not in good
    assert good["kl_data_energy"] < 1e-6 and bad["kl_data_energy"] > 0.1
    assert bad["energy"]["mmd2_ratio"] > 5 * good["energy"]["mmd2_ratio"]
