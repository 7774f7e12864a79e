"""Refitting a trained energy for likelihood (`ebgen fit-density`, `ebgen.train.density`):
the fit raises the held-out likelihood over its Gaussian base (exactly normalised on a 2-D
grid), swaps and refits the base, keeps the generator, and its checkpoint exports with log Z."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from ebgen.checkpoint import load_checkpoint
from ebgen.cli.main import cli
from ebgen.data import load_data
from ebgen.density_fit import DensityFit
from ebgen.metrics.points import grid_log_z
from ebgen.models import build_models, energy_function
from ebgen.presets import preset_config
from ebgen.train import train
from ebgen.train.density import refit_base, refit_energy


def _heldout_log_likelihood(energy, heldout: np.ndarray, box) -> float:
    """Mean log p(x) of `heldout` under exp(−E), normalised on a fine grid over `box`."""
    energy_fn = energy_function(energy)
    return float(-energy_fn(heldout).mean() - grid_log_z(energy_fn, box, resolution=400))


def test_fit_raises_the_heldout_likelihood_over_its_base_on_2d_data():
    """On the 8-Gaussian ring, an untrained energy refitted for likelihood beats the diagonal
    Gaussian it starts from (the fit at 0 updates) by a wide margin on held-out points, both
    normalised exactly on a grid (1.3 nats when written). The preset's energy has Fourier
    features, which the fit switches off: with them the likelihood fell instead."""
    config = preset_config("toy2d", dataset="8gaussians", num_points=4000,
                           num_components=0, energy_width=32, num_experts=16)
    assert config.model.fourier_features > 0
    train_set, heldout = load_data(config.data, config.model, seed=0)
    points = heldout.values.numpy()
    box = (*(points[:, 0].min() - 1, points[:, 0].max() + 1),
           *(points[:, 1].min() - 1, points[:, 1].max() + 1))
    figures = {}
    for updates in (0, 400):
        torch.manual_seed(0)
        energy, _ = build_models(config.model)
        fit = DensityFit(updates=updates, floor=1e-3, lr=1e-3, chain_steps=5)
        energy = refit_energy(config, energy, train_set, fit)
        figures[updates] = _heldout_log_likelihood(energy, points, box)
    assert config.model.base == "data"
    assert figures[400] > figures[0] + 0.8, figures  # a ring is far from one Gaussian


def test_refit_base_swaps_the_kind_and_keeps_the_features():
    """`refit_base` to covariance makes a new net whose base is the training data's mean and
    floored inverse covariance, with the feature and expert weights carried over."""
    config = preset_config("tiny", base="data")
    torch.manual_seed(0)
    energy, _ = build_models(config.model)
    data, _ = load_data(config.data, config.model, seed=0)
    swapped = refit_base(config, energy, data, "covariance", 1e-3)
    assert swapped is not energy and config.model.base == "covariance"
    assert swapped.base_precision.shape == (64, 64)
    x = data.batch(torch.arange(len(data))).flatten(1).double()
    covariance = torch.linalg.inv(swapped.base_precision.double())
    assert torch.allclose(swapped.base_mean.double(), x.mean(0), atol=1e-5)
    assert torch.linalg.eigvalsh(covariance).min() >= 1e-3 * (1 - 1e-6)
    assert torch.equal(swapped.experts.weight, energy.experts.weight)
    with pytest.raises(ValueError, match="fixed base"):
        refit_base(config, swapped, data, "gaussian", 1e-3)


@pytest.mark.slow
def test_fit_density_command_writes_a_checkpoint_that_exports_with_log_z(tmp_path):
    """`ebgen fit-density` on a tiny image run: a new checkpoint with the refitted covariance
    base, trained experts, the run's generator unchanged and its settings recorded; it
    exports with log Z and evaluates to a finite bits/dim. Writing over the run is refused."""
    run = tmp_path / "run"
    train(preset_config("tiny", base="data", steps=20), run, progress=False)
    out = tmp_path / "fitted"
    runner = CliRunner()
    result = runner.invoke(cli, ["fit-density", str(run), "--out", str(out), "--updates", "60",
                                 "--chain-steps", "2", "--lr", "1e-3", "--base", "covariance",
                                 "--floor", "0.001", "--quiet", "--json"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["updates"] == 60 and record["base"] == "covariance" and record["seconds"] > 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["density_fit"]["source"] == str(run)
    assert saved["model"]["base"] == "covariance"
    assert saved["model"]["base_min_variance"] == 0.001
    config, energy, _, meta = load_checkpoint(out)
    assert meta["step"] == 20 and energy.experts.weight.abs().sum() > 0  # reset, then fitted
    before, after = (load_file(str(d / "generator.safetensors")) for d in (run, out))
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    model = tmp_path / "model"
    exported = runner.invoke(cli, ["export", str(out), "--out", str(model), "--log-z",
                                   "--log-z-chains", "4", "--log-z-temperatures", "20",
                                   "--no-archive"], catch_exceptions=False)
    assert exported.exit_code == 0, exported.output
    assert math.isfinite(json.loads((model / "model.json").read_text())["log_partition"]["log_z"])
    refused = runner.invoke(cli, ["fit-density", str(run), "--out", str(run)])
    assert refused.exit_code == 2 and "holds the run itself" in refused.output


def test_fit_density_of_a_run_whose_data_is_elsewhere_asks_for_data(tmp_path):
    """A run trained on a folder that is not here (the bundled mnist on a user's machine) gets
    a one-line error naming --data, not a traceback."""
    run = tmp_path / "run"
    train(preset_config("tiny", base="data", steps=2), run, progress=False)
    config_file = run / "config.json"
    saved = json.loads(config_file.read_text())
    saved["data"].update(path=str(tmp_path / "gone"), dataset="mnist")
    config_file.write_text(json.dumps(saved))
    result = CliRunner().invoke(cli, ["fit-density", str(run), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "give its data with --data PATH" in result.output


@pytest.mark.parametrize("option, value, message", [
    ("--chains", "1", "chains must be at least 2"),
    ("--restart", "1.5", "restart is a share of the chains"),
    ("--floor", "0", "lr and floor must be positive")])
def test_fit_density_refuses_settings_no_fit_can_run_with(tmp_path, option, value, message):
    result = CliRunner().invoke(cli, ["fit-density", "mnist", "--out", str(tmp_path / "o"),
                                      option, value])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "o").exists()


def test_fit_density_will_not_write_over_a_bundled_models_weights():
    """A model directory's torch/ folder is the run: --out may be neither it nor the model
    directory around it."""
    from ebgen.bundled import bundled_model_path

    model = bundled_model_path("mnist")
    for out in (model, model / "torch"):
        result = CliRunner().invoke(cli, ["fit-density", "mnist", "--out", str(out)])
        assert result.exit_code == 2 and "holds the run itself" in result.output
