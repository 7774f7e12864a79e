"""log Z by annealed importance sampling (`ebgen export --log-z`), checked against exact
answers: the base alone (closed form), 2-D energies on a fine grid; the normalised
`log_density` it gives the runtime; and the likelihood baselines' formulas."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from ebgen import load_model
from ebgen.export import export_model
from ebgen.export.partition import log_partition, quadrature_log_partition
from ebgen.metrics.likelihood import (bits_per_dim, diagonal_gaussian_nll, dequantise,
                                      image_likelihood_report, ppca_nll)
from ebgen.metrics.points import grid_log_z
from ebgen.models import build_models
from ebgen.presets import preset_config
from ebgen.train import train


def _energy(base: str, seed: int = 0, expert_scale: float = 1.0, dim: int = 2):
    config = preset_config("toy2d", energy_width=16, num_experts=8, generator_width=16,
                           num_components=0, base=base, data_dim=dim).model
    torch.manual_seed(seed)
    energy, _ = build_models(config)
    with torch.no_grad():
        energy.experts.weight.mul_(expert_scale)
        if base != "gaussian":  # a base that is not the identity
            energy.base_mean.copy_(torch.randn(dim) * 0.5)
            precision = torch.tensor([[2.0, 0.6], [0.6, 0.8]]) if base == "covariance" \
                else torch.tensor([3.0, 0.5])
            energy.base_precision.copy_(precision)
        else:
            energy.log_sigma.fill_(0.3)
            energy.bias.copy_(torch.tensor([0.4, -0.2]))
    return energy.eval()


def _grid(energy, half: float = 8.0) -> float:
    def fn(x):
        with torch.no_grad():
            return energy(torch.from_numpy(x)).numpy()
    return grid_log_z(fn, (-half, half, -half, half), resolution=800)


def _base_alone(base: str):
    """An energy whose experts are off (softplus ≈ 0): E is the base, log Z in closed form."""
    energy = _energy(base)
    with torch.no_grad():
        energy.experts.weight.zero_()
        energy.experts.bias.fill_(-60.0)
    return energy


@pytest.mark.parametrize("base", ["gaussian", "data", "covariance"])
def test_the_base_alone_gives_its_closed_form(base):
    energy = _base_alone(base)
    estimate = log_partition(energy, chains=16, temperatures=20)
    assert estimate.log_z == pytest.approx(_grid(energy), abs=1e-3)
    assert estimate.standard_error < 1e-6 and estimate.log_z_reverse == pytest.approx(
        estimate.log_z, abs=1e-6)


@pytest.mark.parametrize("base", ["gaussian", "covariance"])
def test_ais_matches_the_grid_on_a_2d_energy(base):
    energy = _energy(base, seed=1, expert_scale=4.0)
    want = _grid(energy)
    estimate = log_partition(energy, chains=256, temperatures=400, seed=2)
    assert abs(estimate.log_z - want) < 0.05, (estimate, want)
    assert abs(estimate.log_z_reverse - want) < 0.05
    assert estimate.log_z - 4 * estimate.standard_error < want + 0.02
    assert 0.3 < estimate.acceptance < 0.8


@pytest.mark.parametrize("base", ["gaussian", "data", "covariance"])
def test_quadrature_matches_the_closed_form_and_a_wide_fine_grid(base):
    energy = _base_alone(base)
    alone = quadrature_log_partition(energy)
    closed = log_partition(energy, chains=4, temperatures=10).log_z  # base: exact
    assert alone.log_z == pytest.approx(closed, abs=1e-3) and alone.mass_outside < 1e-9
    rugged = _energy(base, seed=1, expert_scale=4.0)
    estimate = quadrature_log_partition(rugged)
    assert estimate.log_z == pytest.approx(_grid(rugged), abs=0.01)
    assert estimate.error < 0.005 and estimate.resolution >= 800
    with pytest.raises(ValueError, match="2-D"):
        quadrature_log_partition(build_models(preset_config(
            "toy2d", energy_width=16, num_experts=8, num_components=0, data_dim=3).model)[0])


@pytest.mark.slow
def test_export_log_z_normalises_the_served_density(tmp_path):
    config = preset_config("toy2d", steps=200, energy_width=32, num_experts=16,
                           generator_width=32, num_components=0, sample_every=1000,
                           checkpoint_every=1000, num_eval_samples=64)
    train(config, tmp_path / "run", progress=False)
    out = export_model(tmp_path / "run", tmp_path / "model", archive=False, progress=False,
                       log_z={"chains": 128, "temperatures": 300})
    info = json.loads((out / "model.json").read_text())
    estimate = info["log_partition"]
    model = load_model(out, device="cpu")
    x = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    scored = model.score(x)
    np.testing.assert_allclose(scored["log_density"], -scored["energy"] - estimate["log_z"],
                               rtol=1e-5, atol=1e-4)
    lo = np.asarray(info["data_units"]["shift"]) - 8 * np.asarray(info["data_units"]["scale"])
    hi = np.asarray(info["data_units"]["shift"]) + 8 * np.asarray(info["data_units"]["scale"])
    grid = grid_log_z(model.energy, (lo[0], hi[0], lo[1], hi[1]), resolution=800)
    assert abs(estimate["log_z"] - grid) < 0.01, (estimate, grid)
    # 2-D: the midpoint rule serves, the AIS run stays beside it for comparison
    assert estimate["method"].startswith("midpoint rule") and estimate["mass_outside"] < 1e-6
    assert estimate["ais"]["chains"] == 128 and "log_z_reverse" in estimate["ais"]


def test_likelihood_baselines_and_bits_per_dim():
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(0)
    train_x = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6)) * 0.3
    test_x = rng.normal(size=(50, 6)) @ rng.normal(size=(6, 6)) * 0.3
    mean, var = train_x.mean(0), train_x.var(0)
    np.testing.assert_allclose(diagonal_gaussian_nll(train_x, test_x),
                               -multivariate_normal(mean, np.diag(var)).logpdf(test_x))
    q = 2  # PPCA: C = W Wᵀ + σ² I from the eigen-decomposition of the ML covariance
    values, vectors = np.linalg.eigh(np.cov(train_x.T, bias=True))
    values, vectors = values[::-1], vectors[:, ::-1]
    noise = values[q:].mean()
    w = vectors[:, :q] * np.sqrt(values[:q] - noise)
    covariance = w @ w.T + noise * np.eye(6)
    np.testing.assert_allclose(ppca_nll(train_x, test_x, components=q),
                               -multivariate_normal(mean, covariance).logpdf(test_x), rtol=1e-6)
    # the uniform density on [-1, 1]^D: an interior level has probability (1/127.5)/2 = 1/255,
    # an end level (half a bin inside the cube) 1/510
    levels = rng.integers(1, 255, size=(40, 1, 4, 4))
    images = levels / 127.5 - 1
    report = image_likelihood_report(lambda x: np.zeros(len(x)), 16 * math.log(2), images,
                                     images, log_z_reverse=16 * math.log(2) + 16)
    assert report["bits_per_dim"] == pytest.approx(math.log2(255))
    assert report["bits_per_dim_reverse_log_z"] == pytest.approx(math.log2(255) + 1 / math.log(2))
    ends = np.array([[[[-1.0, 1.0]]]])
    x, volume = dequantise(ends, rng)
    assert (-1 <= x).all() and (x <= 1).all()
    assert volume[0] == pytest.approx(2 * math.log(0.5 / 127.5))
    assert bits_per_dim(-volume + 2 * math.log(2), 2) == pytest.approx(math.log2(510))
    x, volume = dequantise(images, rng)
    assert np.abs(x - images).max() <= 0.5 / 127.5 and x.std() > 0


def test_an_image_covariance_base_is_the_images_gaussian_fit_and_ais_normalises_it():
    """Images take the full-covariance base too (D = 64 here): with the experts off the energy is
    the training images' Gaussian (eigenvalues floored), whose log Z AIS gets exactly."""
    from ebgen.config import ModelConfig

    config = ModelConfig(kind="image", image_size=8, channels=1, energy_width=8, num_experts=4,
                         generator_width=8, base="covariance", base_min_variance=1e-3)
    rng = np.random.default_rng(0)
    rotation, _ = np.linalg.qr(rng.normal(size=(64, 64)))  # some directions (nearly) flat:
    scales = np.linspace(0.0, 0.3, 64)
    images = np.tanh((rng.normal(size=(2000, 64)) * scales) @ rotation).reshape(-1, 1, 8, 8)
    energy, _ = build_models(config)
    energy.fit_base(torch.from_numpy(images).float())
    with torch.no_grad():
        energy.experts.weight.zero_()
        energy.experts.bias.fill_(-60.0)
    flat = images.reshape(len(images), -1)
    values, vectors = np.linalg.eigh(np.cov(flat, rowvar=False, bias=True))
    assert values.min() < 1e-3  # the floor is exercised
    floored = np.maximum(values, 1e-3)
    x = images[:5]
    whitened = (x.reshape(5, -1) - flat.mean(0)) @ vectors
    want = 0.5 * (whitened ** 2 / floored).sum(1)
    with torch.no_grad():
        got = energy.eval()(torch.from_numpy(x).float()).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-2)
    estimate = log_partition(energy, chains=8, temperatures=10)
    closed_form = 0.5 * (np.log(floored).sum() + 64 * math.log(2 * math.pi))
    assert estimate.log_z == pytest.approx(closed_form, abs=1e-2)


@pytest.mark.slow
@pytest.mark.parametrize("options", [
    ["--no-reset-experts", "--floor", "0.05", "--quadratic", "4"],
    ["--base", "covariance", "--floor", "0.001", "--lr", "1e-3"]],
    ids=["kept-experts-quadratic", "reset-covariance"])
def test_likelihood_finetune_benchmark_changes_the_energy_and_reports_bits_per_dim(tmp_path,
                                                                                  options):
    """`benchmarks/likelihood_finetune.py` on a tiny image run with the data base: the refit
    (with the trained experts and new quadratic ones, or from a swapped base with the experts
    reset) changes where the experts lower the energy, and the fitted energy is exported with
    log Z and evaluated."""
    import subprocess
    import sys
    from pathlib import Path

    run = tmp_path / "run"
    train(preset_config("tiny", base="data", steps=20), run, progress=False)
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "likelihood_finetune.py"
    done = subprocess.run([sys.executable, str(script), str(run), "--updates", "250",
                           "--chain-steps", "2", "--chains", "4", "--temperatures", "20",
                           *options], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    profiles = [line.split(": ", 1)[1] for line in lines if line.startswith("base(x) − E(x)")]
    assert len(profiles) == 2 and profiles[0] != profiles[1]
    assert any(line.startswith("update 250: ") for line in lines)
    report = json.loads(lines[-1])
    assert math.isfinite(report["bits_per_dim"]) and math.isfinite(report["diagonal_gaussian"])
    assert set(report["auroc"]) == {"noise", "blur", "inverted", "shifted"}
