"""Energy ensembles (`energy_members`): the mean of independently trained members, one model to
everything downstream — the members' own gradients in training, log Z of the mean, a real
train → export → onnxruntime score, and the CLI option."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ebgen import load_model
from ebgen.checkpoint import load_checkpoint
from ebgen.cli.main import cli
from ebgen.ensemble import EnergyEnsemble
from ebgen.errors import EbgenError
from ebgen.export import export_model
from ebgen.export.partition import log_partition
from ebgen.metrics.points import grid_log_z
from ebgen.models import EnergyModel, build_models
from ebgen.presets import preset_config
from ebgen.train import train
from ebgen.train.energy_terms import TermWeights, energy_terms


def _config(members: int = 3, **overrides):
    return preset_config("toy2d", energy_width=16, num_experts=8, generator_width=16,
                         num_components=0, energy_members=members, **overrides)


def test_the_energy_is_the_members_mean_and_split_scores_each_chunk_alone():
    torch.manual_seed(0)
    energy, _ = build_models(_config().model)
    assert isinstance(energy, EnergyEnsemble) and energy.num_members == 3
    x = torch.randn(6, 2)
    alone = torch.stack([member(x) for member in energy.members])
    assert not torch.allclose(alone[0], alone[1])  # each member its own initial draw
    torch.testing.assert_close(energy(x), alone.mean(0))
    split = energy(torch.cat([x[:2], x[2:4], x[4:]]), split=True)
    torch.testing.assert_close(split, torch.cat([alone[0, :2], alone[1, 2:4], alone[2, 4:]]))
    with pytest.raises(ValueError, match="3 equal chunks"):
        energy(x[:5], split=True)
    assert type(build_models(_config(1).model)[0]) is EnergyModel
    with pytest.raises(EbgenError, match="energy_members"):
        _config(0)


@pytest.mark.parametrize("terms,overrides", [
    (dict(r1=0.1, score_matching=10.0), {}),
    (dict(score_matching=10.0, calibration=1.0), dict(score_matching_std_min=0.003)),
    (dict(score_matching=1.0, likelihood=1.0), dict(score_matching_kind="exact")),
    (dict(r1=0.1), dict(objective="gan")),
], ids=["r1-denoising", "calibration-multiscale", "likelihood-exact", "gan"])
def test_each_member_trains_as_it_would_alone(terms, overrides):
    """The ensemble's energy step gives member k exactly 1/K of the gradient the same step
    gives that member trained alone: the members never see each other."""
    config = _config(2, score_matching_share=0.5, **overrides)
    torch.manual_seed(0)
    ensemble, _ = build_models(config.model)
    x, x_fake = torch.randn(16, 2), torch.randn(16, 2)
    weights = TermWeights(**terms)
    torch.manual_seed(1)  # the score-matching noise
    energy_terms(ensemble, x, x_fake, config.train, weights).loss.backward()
    for member in ensemble.members:
        lone = EnergyModel(member.config)
        lone.load_state_dict(member.state_dict())
        torch.manual_seed(1)
        energy_terms(lone, x, x_fake, config.train, weights).loss.backward()
        for (name, p_lone), p_member in zip(lone.named_parameters(), member.parameters()):
            torch.testing.assert_close(2 * p_member.grad, p_lone.grad, msg=name)


def test_log_z_of_the_mean_matches_the_grid():
    """The members' Gaussian bases average into one Gaussian (what AIS starts from): with
    the experts off its closed form is exact; with them on, AIS agrees with a fine grid."""
    torch.manual_seed(0)
    energy, _ = build_models(_config(2).model)
    with torch.no_grad():
        for i, member in enumerate(energy.members):
            member.log_sigma.fill_(0.3 * i - 0.2)
            member.bias.copy_(torch.tensor([0.4, -0.2]) * (2 * i - 1))
            member.experts.weight.zero_()
            member.experts.bias.fill_(-60.0)
    energy.eval()

    def grid(net):
        with torch.no_grad():
            return grid_log_z(lambda x: net(torch.from_numpy(x)).numpy(), (-8, 8, -8, 8),
                              resolution=800)

    assert log_partition(energy, chains=8, temperatures=10).log_z == pytest.approx(
        grid(energy), abs=1e-3)
    with torch.no_grad():
        for member in energy.members:
            member.experts.weight.normal_(0, 2.0)
            member.experts.bias.zero_()
    estimate = log_partition(energy, chains=256, temperatures=400, seed=2)
    assert abs(estimate.log_z - grid(energy)) < 0.05, estimate


def test_an_ensemble_trains_exports_and_serves_its_mean(tmp_path):
    config = _config(2, steps=60, sample_every=1000, checkpoint_every=1000,
                     num_eval_samples=64)
    train(config, tmp_path / "run", progress=False)
    saved, energy, _, _ = load_checkpoint(tmp_path / "run")
    assert saved.model.energy_members == 2 and isinstance(energy, EnergyEnsemble)
    out = export_model(tmp_path / "run", tmp_path / "model", archive=False, progress=False)
    assert json.loads((out / "model.json").read_text())["architecture"][
        "energy_members"] == 2
    x = np.random.default_rng(0).normal(size=(9, 2)).astype(np.float32)
    served = load_model(out, device="cpu").score(x)["energy"]
    with torch.no_grad():
        members = torch.stack([m(torch.from_numpy(x)) for m in energy.members]).mean(0)
    np.testing.assert_allclose(served, members.numpy(), rtol=1e-4, atol=1e-4)
    refiner = load_model(out, device="cpu")  # the mean's potential went to ONNX as well
    assert refiner.can_refine
    z, accepted = refiner.refine(refiner.latents(16, seed=1), steps=5, seed=1)
    assert z.shape == (16, refiner.z_dim) and 0 < accepted <= 1


def test_the_cli_option(tmp_path):
    result = CliRunner().invoke(cli, ["train", "--help"])
    assert "--energy-members" in result.output
    result = CliRunner().invoke(cli, ["train", "--preset", "toy2d", "--energy-members", "0",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code != 0 and "energy_members" in result.output
