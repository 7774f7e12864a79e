"""Distribution metrics (MMD ratio, precision/recall, exact energy samples), the importance-sampled
likelihood term, and models in the user's own units (location and scale of the data)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from ebgen.metrics import distribution as dm
from ebgen.presets import preset_config
from ebgen.losses import kde_proposal, likelihood_loss
from ebgen.metrics.points import sample_energy_grid
from ebgen.toy2d import get_toy_set

RING = get_toy_set("8gaussians")


def test_mmd_ratio_is_one_for_fresh_data_and_grows_with_each_failure():
    rng = np.random.default_rng(0)
    data = RING.sample(10000, rng)
    fresh = dm.mmd_report(RING.sample(12500, rng), data)
    assert 0.6 < fresh["mmd2_ratio"] < 1.6 and 0.6 < fresh["mmd2_local_ratio"] < 1.6
    idx = rng.integers(0, 8, 12500)
    sharp = RING.centers[idx] + 0.5 * RING.std * rng.standard_normal((12500, 2))
    assert dm.mmd_report(sharp, data)["mmd2_local_ratio"] > 5      # half the width
    lopsided = RING.centers[np.minimum(idx, 6)] + RING.std * rng.standard_normal((12500, 2))
    assert dm.mmd_report(lopsided, data)["mmd2_ratio"] > 5        # one mode's share doubled
    moved = dm.mmd_report(data[:5000] + 0.5, data)                 # a shift
    assert moved["mmd2_ratio"] > 50


def test_mmd_needs_enough_points_and_survives_nan_samples():
    with pytest.raises(ValueError, match="at least 4 data points"):
        dm.mmd_report(np.zeros((10, 2)), np.zeros((3, 2)))
    data = RING.sample(2000, np.random.default_rng(1))
    bad = np.full((2000, 2), np.nan)
    assert dm.mmd_report(bad, data)["mmd2_ratio"] > 10


def test_precision_and_recall_see_spread_and_strays():
    rng = np.random.default_rng(0)
    a, b = RING.sample(2000, rng), RING.sample(2000, rng)
    wide = RING.centers[rng.integers(0, 8, 2000)] + 3 * RING.std * rng.standard_normal((2000, 2))
    report = dm.precision_recall_report(wide, a, b)
    assert 0.9 < report["precision_data"] <= 1 and 0.9 < report["recall_data"] <= 1
    assert report["precision_ratio"] < 0.7 and report["recall_ratio"] > 0.9
    narrow = RING.centers[rng.integers(0, 8, 2000)] + 0.3 * RING.std * rng.standard_normal(
        (2000, 2))
    assert dm.precision_recall_report(narrow, a, b)["recall_ratio"] < 0.7


def test_energy_grid_samples_follow_exp_minus_e():
    box = (-1.0, 1.0, -1.0, 1.0)
    energy = lambda p: 0.5 * ((p.astype(np.float64) - [0.3, -0.2]) ** 2).sum(1) / 0.1 ** 2
    x = sample_energy_grid(energy, box, 20000, resolution=400, seed=0)
    assert x.shape == (20000, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x.mean(0), [0.3, -0.2], atol=0.005)
    np.testing.assert_allclose(x.std(0), [0.1, 0.1], rtol=0.03)
    flat = sample_energy_grid(lambda p: np.full(len(p), np.nan), box, 100, resolution=20)
    assert np.isfinite(flat).all() and (np.abs(flat) <= 1).all()


def test_kde_proposal_density_is_normalised_and_the_likelihood_term_is_ml():
    torch.manual_seed(0)
    u = torch.randn(256, 2) * 0.3 + torch.tensor([0.5, 0.0])
    y, log_q = kde_proposal(u, 20000)
    target = torch.distributions.Normal(0.0, 0.5)
    log_p = target.log_prob(y).sum(1)
    assert abs(torch.exp(log_p - log_q).mean().item() - 1.0) < 0.05  # E_q[p/q] = 1
    # With E = −log p, the weighted proposal estimates E_p[E]: the term has the ML gradient.
    x = target.sample((256, 2))
    loss = likelihood_loss(-target.log_prob(x).sum(1), -log_p[:512], log_q[:512])
    assert torch.isfinite(loss)


def _ring_file(path, shift=(0.0, 0.0), scale=1.0):
    x = RING.sample(4000, np.random.default_rng(0)) * scale + np.asarray(shift)
    np.save(path, x.astype(np.float32))
    return path


def test_a_ring_far_from_the_origin_trains_as_the_ring_does(tmp_path):
    """Standardisation: (1000, −500) + 100·ring trains like the ring; samples come out in the
    user's units and energies include the change of variables (log 100² apart)."""
    from ebgen.checkpoint import load_checkpoint
    from ebgen.train import train

    runs = {}
    for name, shift, scale in (("near", (0.0, 0.0), 1.0), ("far", (1000.0, -500.0), 100.0)):
        path = _ring_file(tmp_path / f"{name}.npy", shift, scale)
        # Two trajectories that differ only by the rounding of standardisation: the
        # deployed generator's running statistics, 15 steps old at the handover, amplify it
        # (11 user units after 30 steps), so these runs train the generator in training mode.
        config = preset_config("toy2d", path=str(path), steps=30, batch_size=64, z_dim=4,
                               energy_width=16, generator_width=16, num_experts=8,
                               calibrate_from=0.5, checkpoint_every=30, sample_every=30,
                               generator_as_deployed=False)
        assert config.data.dataset is None  # the file, not the preset's ring
        train(config, tmp_path / name, progress=False)
        runs[name] = load_checkpoint(tmp_path / name)
    (near_cfg, near_e, near_g, _), (far_cfg, far_e, far_g, _) = runs["near"], runs["far"]
    np.testing.assert_allclose(far_cfg.model.data_shift, [1000, -500], atol=5)
    np.testing.assert_allclose(far_cfg.model.data_scale, np.array(near_cfg.model.data_scale)
                               * 100, rtol=1e-3)
    z = torch.rand(64, 4) * 2 - 1
    with torch.no_grad():
        near_x, far_x = near_g(z), far_g(z)
        np.testing.assert_allclose(far_x.numpy(), near_x.numpy() * 100 + [1000, -500],
                                   atol=1.0)  # 1 user unit = 0.01 of the ring's units
        gap = far_e(near_x * 100 + torch.tensor([1000.0, -500.0])) - near_e(near_x)
    np.testing.assert_allclose(gap.numpy(), 2 * math.log(100), atol=0.05)


def test_the_user_units_travel_through_export_and_the_onnx_runtime(tmp_path):
    from ebgen.export import export_model
    from ebgen import load_model
    from ebgen.train import train

    path = _ring_file(tmp_path / "far.npy", (1000.0, -500.0), 100.0)
    config = preset_config("toy2d", path=str(path), steps=20, batch_size=64, z_dim=4,
                           energy_width=16, generator_width=16, num_experts=8,
                           checkpoint_every=20, sample_every=20)
    train(config, tmp_path / "run", progress=False)
    export_model(tmp_path / "run", tmp_path / "model", archive=False, progress=False)
    info = json.loads((tmp_path / "model" / "model.json").read_text())
    units = info["data_units"]
    np.testing.assert_allclose(units["shift"], [1000, -500], atol=5)
    assert math.isclose(units["log_det"], sum(math.log(s) for s in units["scale"]))
    model = load_model(tmp_path / "model", device="cpu")
    x = model.generate(500, seed=0)
    assert np.abs(x.mean(0) - [1000, -500]).max() < 100 and x.std() > 10  # user units
    data = np.load(path)[:200]
    scores = model.score(data)
    assert np.isfinite(scores["energy"]).all()


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_exact_score_matching_is_minimal_at_the_datas_own_width(scale):
    from ebgen.losses import exact_score_matching, input_gradients

    torch.manual_seed(0)
    x = torch.randn(20000, 2) * torch.tensor([0.5, 2.0]) * scale

    def loss(s1: float, s2: float) -> float:
        inputs = x.clone().requires_grad_(True)
        u = inputs / scale
        energy = 0.5 * (u[:, 0] ** 2 / s1 ** 2 + u[:, 1] ** 2 / s2 ** 2)
        grad_u = input_gradients(energy, inputs) * scale
        return exact_score_matching(grad_u, inputs, scale, len(x), 1.0).item()

    best = loss(0.5, 2.0)
    assert all(loss(*wrong) > best for wrong in [(0.4, 2.0), (0.6, 2.0), (0.5, 1.6), (0.5, 2.5)])
