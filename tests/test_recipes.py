"""The stabilising ingredients of the default recipe, and the recipes themselves."""
import copy
import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ebgen.config import ModelConfig
from ebgen.presets import preset_config
from ebgen.errors import EbgenError
from ebgen.losses import (calibration_loss, gradient_penalty, importance_weights, input_gradients,
                          knn_entropy, knn_log_density, score_matching)
from ebgen.mutual_info import StatisticsNetwork, jsd_mutual_information
from ebgen.names import METRICS_FILE
from ebgen.train import Trainer, train
from ebgen.train.energy_terms import TermWeights, energy_terms, noise_stds


@pytest.mark.parametrize("std", [0.05, 1.0])
def test_knn_entropy_matches_gaussian_closed_form(std):
    torch.manual_seed(0)
    x = torch.randn(4096, 2) * std
    assert knn_entropy(x).item() == pytest.approx(math.log(2 * math.pi * math.e * std ** 2),
                                                  abs=0.05)


def test_knn_entropy_of_uniform_square_and_its_gradient_spreads_samples():
    torch.manual_seed(0)
    assert knn_entropy(torch.rand(4096, 2)).item() == pytest.approx(0.0, abs=0.05)
    x = (torch.randn(64, 2) * 0.01).requires_grad_()
    knn_entropy(x).backward()
    # Ascending the entropy moves samples away from the centre of the cluster.
    assert ((x + 0.01 * x.grad).norm(dim=1).mean() > x.norm(dim=1).mean()).item()
    with pytest.raises(ValueError):
        knn_entropy(torch.rand(3, 2), k=3)


def test_r1_penalty_closed_form():
    x = torch.randn(16, 2, requires_grad=True)
    energy = 0.5 * x.pow(2).sum(1)  # ∇E = x
    assert gradient_penalty(input_gradients(energy, x)).item() == pytest.approx(
        0.5 * x.detach().pow(2).sum(1).mean().item(), rel=1e-5)


def test_score_matching_is_zero_exactly_for_the_smoothed_density():
    # Data at the origin, smoothed by N(0, std²): E = ½‖x‖²/std² is its exact energy, so the
    # denoising target ε is met row by row; a wider or narrower well is penalised.
    torch.manual_seed(0)
    std, noise = 0.1, torch.randn(256, 2)
    losses = {}
    for width in (0.05, 0.1, 0.2):
        noisy = (std * noise).requires_grad_()
        energy = 0.5 * noisy.pow(2).sum(1) / width ** 2
        losses[width] = score_matching(input_gradients(energy, noisy), noise, std).item()
    assert losses[0.1] == pytest.approx(0.0, abs=1e-10)
    assert losses[0.05] > 0.1 and losses[0.2] > 0.1


def test_multi_scale_noise_is_log_uniform_and_each_row_meets_its_own_target():
    torch.manual_seed(0)
    stds = noise_stds(0.01, 1.0, torch.zeros(20000, 3))
    assert stds.shape == (20000, 1) and stds.min() >= 0.01 and stds.max() <= 1.0
    # log-uniform: log10 std is uniform on [-2, 0], so its median is -1, a quarter below -1.5
    logs = stds.log10().flatten()
    assert logs.median().item() == pytest.approx(-1.0, abs=0.03)
    assert (logs < -1.5).float().mean().item() == pytest.approx(0.25, abs=0.02)
    # Per-row std: the loss is the mean of each row's own single-std loss
    noise = torch.randn(6, 2)
    rows = torch.tensor([0.05, 0.1, 0.2, 0.05, 0.1, 0.2]).unsqueeze(1)
    noisy = (rows * noise).requires_grad_()
    grad = input_gradients(0.5 * noisy.pow(2).sum(1) / 0.1 ** 2, noisy)
    each = [score_matching(grad[i:i + 1], noise[i:i + 1], rows[i].item()) for i in range(6)]
    assert score_matching(grad, noise, rows).item() == pytest.approx(
        torch.stack(each).mean().item(), rel=1e-6)
    assert each[1].item() == pytest.approx(0.0, abs=1e-10)  # the row whose std is the well's


def test_multi_scale_noise_enters_the_energy_step_and_is_checked(tmp_path):
    single = _energy_loss_after_one_step(tmp_path, score_matching=1.0)
    assert _energy_loss_after_one_step(tmp_path, score_matching=1.0,
                                       score_matching_std_min=0.001) != single
    for bad, message in [(dict(score_matching_std_min=0.02), "must be below"),
                         (dict(score_matching_std_min=-1.0), "must be > 0"),
                         (dict(score_matching_std_min=0.001, score_matching_kind="exact"),
                          "goes with neither")]:
        with pytest.raises(EbgenError, match=message):
            preset_config("toy2d", score_matching_std=0.01, **bad)


def test_importance_weights_favour_the_deeper_well_and_cap_strays():
    # Two equal clusters of samples (equal p_G); the energy makes well A 2 nats deeper, so
    # exp(−E)/p_G puts up to e² ≈ 7.4 times more weight on A's samples than on B's (less after
    # the truncation, which caps the heaviest weights).
    torch.manual_seed(0)
    a = torch.randn(200, 2) * 0.05
    b = torch.randn(200, 2) * 0.05 + torch.tensor([3.0, 0.0])
    energy = torch.cat([torch.zeros(200), torch.full((200,), 2.0)])
    w = importance_weights(energy, torch.cat([a, b]))
    assert w.sum().item() == pytest.approx(1.0)
    assert 3 < w[:200].sum() / w[200:].sum() < math.e ** 2 * 1.3
    # A lone sample far from the rest (tiny p_G) with a low energy cannot take the batch.
    stray = torch.cat([a, torch.tensor([[10.0, 10.0]])])
    w = importance_weights(torch.cat([torch.zeros(200), torch.tensor([-5.0])]), stray)
    assert w[-1].item() < 0.1


def test_calibration_raises_the_too_deep_well_and_vanishes_when_calibrated():
    torch.manual_seed(0)
    x = torch.cat([torch.randn(200, 2) * 0.05, torch.randn(200, 2) * 0.05 + 3.0])
    # Equal data in both clusters, but well A is 2 nats deeper: descent must raise A, lower B.
    energy = torch.cat([torch.zeros(200), torch.full((200,), 2.0)]).requires_grad_()
    calibration_loss(energy, x).backward()
    assert energy.grad[:200].sum() < 0 < energy.grad[200:].sum()
    # Energies equal to −log of the batch's own density estimate: already calibrated.
    energy = (-knn_log_density(x)).requires_grad_()
    calibration_loss(energy, x).backward()
    assert energy.grad.abs().max().item() < 1e-6


def test_mi_estimate_separates_dependent_from_independent_pairs():
    torch.manual_seed(0)
    config = ModelConfig(kind="points", z_dim=2, energy_width=32)
    estimates = {}
    for name, make_x in {"dependent": lambda z: z.clone(),
                         "independent": lambda z: torch.rand_like(z) * 2 - 1}.items():
        statistics = StatisticsNetwork(config)
        opt = torch.optim.Adam(statistics.parameters(), lr=3e-3)
        for _ in range(300):
            z = torch.rand(256, 2) * 2 - 1
            loss = -jsd_mutual_information(statistics, make_x(z), z)
            opt.zero_grad()
            loss.backward()
            opt.step()
        z = torch.rand(1024, 2) * 2 - 1
        estimates[name] = jsd_mutual_information(statistics, make_x(z), z).item()
    assert estimates["dependent"] > 1.0 and estimates["independent"] < 0.1
    assert estimates["dependent"] <= 2 * math.log(2)


def test_recipes_and_their_errors():
    default, paper = preset_config("toy2d"), preset_config("toy2d", recipe="paper")
    assert default.train.entropy == "mi" and default.train.gradient_penalty > 0
    assert default.train.lr_decay
    assert (paper.train.entropy, paper.train.gradient_penalty, paper.train.lr_decay) == (
        "bn", 0.0, False)
    assert default.train.score_matching > 0 and default.train.calibration > 0
    assert 0 < default.train.calibrate_from < 1
    assert (paper.train.score_matching, paper.train.calibration) == (0.0, 0.0)
    assert default.train.likelihood > 0 and default.train.calibrate_entropy == "knn"
    assert (paper.train.likelihood, paper.train.calibrate_entropy) == (0.0, None)
    assert paper.train.recipe == "paper"
    # smooth wells and the deployed generator from the handover on; the paper's energy reads
    # the raw input (a recipe sets fields of any section)
    assert (default.model.fourier_features, default.model.fourier_max_frequency) == (128, 8.0)
    assert default.train.generator_as_deployed and default.train.fourier_from is None
    assert (paper.model.fourier_features, paper.train.generator_as_deployed) == (0, False)
    assert preset_config("mnist").model.fourier_features == 0
    with pytest.raises(EbgenError, match="--no-generator-as-deployed"):
        preset_config("toy2d", calibrate_from=0.0)
    assert not preset_config("toy2d", calibrate_from=0.0,
                             generator_as_deployed=False).train.generator_as_deployed
    with pytest.raises(EbgenError, match="calibrate_entropy must be"):
        preset_config("toy2d", calibrate_entropy="exact")
    with pytest.raises(EbgenError, match="score_matching_kind must be"):
        preset_config("toy2d", score_matching_kind="sliced")
    assert preset_config("toy2d", recipe="paper", entropy="knn").train.entropy == "knn"
    with pytest.raises(EbgenError, match="unknown recipe"):
        preset_config("toy2d", recipe="magic")
    with pytest.raises(EbgenError, match="entropy must be"):
        preset_config("toy2d", entropy="exact")


def test_resume_with_mi_entropy_and_penalty_is_exact(tmp_path):
    """A run interrupted after its step-7 checkpoint resumes to the uninterrupted weights."""
    config = preset_config("toy2d", steps=16, batch_size=32, checkpoint_every=100,
                           sample_every=100, num_eval_samples=64, z_dim=4, energy_width=16,
                           generator_width=16, num_experts=8, num_points=2048)
    assert config.train.entropy == "mi" and config.train.lr_decay
    train(config, tmp_path / "straight", progress=False)
    interrupted = Trainer(config, tmp_path / "split", progress=False)
    for _ in range(7):
        interrupted.train_step()
    interrupted.save()
    Trainer(config, tmp_path / "split", resume=True, progress=False).fit()
    for part in ("energy", "generator"):
        a = load_file(str(tmp_path / "straight" / f"{part}.safetensors"))
        b = load_file(str(tmp_path / "split" / f"{part}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), part


def test_adagrad_takes_the_authors_rates_unless_given():
    config = preset_config("mnist", optimizer="adagrad")
    assert (config.train.lr_energy, config.train.lr_generator, config.train.weight_decay) == (
        1e-3, 2e-3, 1e-5)
    assert preset_config("mnist", optimizer="adagrad", lr_generator=5e-4).train.lr_generator == 5e-4


def test_gan_objective_builds_no_statistics_network(tmp_path):
    trainer = Trainer(preset_config("toy2d", objective="gan", steps=1), tmp_path, progress=False)
    assert trainer.config.train.entropy == "mi" and trainer.statistics is None
    assert trainer.train_step()["entropy"].isfinite()  # logs the cheap batch-norm estimate
    trainer.step = trainer.config.train.steps  # past the handover: still R1 only
    assert trainer._energy_term_weights() == TermWeights(r1=trainer.config.train.gradient_penalty)


def _energy_loss_after_one_step(tmp_path, **terms) -> float:
    weights = dict(gradient_penalty=0.0, score_matching=0.0, calibration=0.0, likelihood=0.0,
                   calibrate_from=0.0, generator_as_deployed=False) | terms
    config = preset_config("toy2d", steps=1, batch_size=32, z_dim=4, energy_width=16,
                           generator_width=16, num_experts=8, num_points=2048, **weights)
    out = tmp_path / "_".join(f"{k}{v}" for k, v in terms.items())
    return Trainer(config, out, progress=False).train_step()["loss_energy"].item()


def test_score_matching_and_calibration_enter_the_energy_step(tmp_path):
    plain = _energy_loss_after_one_step(tmp_path)
    # Same seed, same draws: only the added term changes the energy loss.
    assert _energy_loss_after_one_step(tmp_path, score_matching=1.0) > plain
    assert _energy_loss_after_one_step(tmp_path, calibration=1.0) != plain
    assert _energy_loss_after_one_step(tmp_path, likelihood=1.0) != plain
    exact = _energy_loss_after_one_step(tmp_path, score_matching=1.0,
                                        score_matching_kind="exact")
    assert exact != plain and exact != _energy_loss_after_one_step(tmp_path, score_matching=1.0)


def test_score_matching_share_noises_that_share_of_the_batch(tmp_path):
    whole = _energy_loss_after_one_step(tmp_path, score_matching=1.0, score_matching_share=1.0)
    assert _energy_loss_after_one_step(tmp_path, score_matching=1.0,
                                       score_matching_share=0.5) != whole


@pytest.mark.parametrize("terms, forwards", [
    # (energy terms, [(rows, need ∇ₓE)] of the energy step's forward passes), batch 32; DDGM
    # reuses the generator step's E(samples), a GAN (non-linear in E) runs them again
    (dict(), [(32, False)]),                                        # data, no penalty
    (dict(gradient_penalty=1.0), [(32, True)]),                     # R1: data rows graded
    (dict(score_matching=1.0, score_matching_share=0.5), [(32, False), (16, True)]),
    (dict(gradient_penalty=1.0, score_matching=1.0, score_matching_share=0.25),
     [(40, True)]),                                                 # data + 8 noisy rows
    (dict(objective="gan", gradient_penalty=1.0), [(32, False), (32, True)]),
    (dict(energy_magnitude=1.0), [(64, False)]),                    # E(samples)² needs its own
    (dict(likelihood=1.0), [(64, False)]),                          # data + the proposal
])
def test_only_rows_a_penalty_needs_pay_the_double_backward(tmp_path, terms, forwards):
    weights = dict(gradient_penalty=0.0, score_matching=0.0, calibration=0.0, likelihood=0.0,
                   calibrate_from=0.0, entropy="bn",
                   generator_as_deployed=False) | terms
    config = preset_config("toy2d", steps=1, batch_size=32, z_dim=4, energy_width=16,
                           generator_width=16, num_experts=8, num_points=2048, **weights)
    trainer = Trainer(config, tmp_path, progress=False)
    seen = []
    trainer.energy.register_forward_hook(
        lambda module, args, out: seen.append((len(args[0]), args[0].requires_grad)))
    trainer.train_step()
    assert seen[0] == (32, True)  # the generator step (its samples carry G's graph)
    assert seen[1:] == forwards


@pytest.mark.parametrize("terms", [dict(), dict(gradient_penalty=1.0),
                                   dict(score_matching=1.0, likelihood=1.0, entropy="knn")])
def test_reused_sample_energies_give_the_energy_step_its_own_gradient(tmp_path, terms):
    """The energy's gradient after a step equals that of its loss computed afresh."""
    weights = dict(gradient_penalty=0.0, score_matching=0.0, calibration=0.0, likelihood=0.0,
                   calibrate_from=0.0, generator_as_deployed=False) | terms
    config = preset_config("toy2d", steps=1, batch_size=32, z_dim=4, energy_width=16,
                           generator_width=16, num_experts=8, num_points=2048, **weights)
    trainer = Trainer(config, tmp_path, progress=False)
    energy, generator = copy.deepcopy(trainer.energy), copy.deepcopy(trainer.generator)
    x, z = trainer._draw()  # the step's draws (and its seed of any noise)
    rng = torch.get_rng_state()
    x_fake = generator(z).detach()
    energy_terms(energy, x, x_fake, config.train, trainer._energy_term_weights()).loss.backward()
    torch.set_rng_state(rng)
    trainer._draw = lambda: (x, z)
    trainer.train_step()
    for (name, p), reference in zip(trainer.energy.named_parameters(), energy.parameters()):
        assert torch.allclose(p.grad, reference.grad, rtol=1e-4, atol=1e-6), name


def test_bad_energy_terms_are_refused_clearly(tmp_path):
    with pytest.raises(EbgenError, match="score_matching is a weight"):
        preset_config("toy2d", score_matching=-1.0)
    with pytest.raises(EbgenError, match="score_matching_std must be > 0"):
        preset_config("toy2d", score_matching_std=0.0)
    with pytest.raises(EbgenError, match="score_matching_share is a share"):
        preset_config("toy2d", score_matching_share=0.0)
    with pytest.raises(EbgenError, match="--calibration and --likelihood need low-dimensional"):
        Trainer(preset_config("tiny", calibration=1.0), tmp_path, progress=False)


def test_calibrate_from_hands_r1_over_to_score_matching_and_calibration(tmp_path):
    config = preset_config("toy2d", steps=10, batch_size=32, z_dim=4, energy_width=16,
                           generator_width=16, num_experts=8, num_points=2048,
                           gradient_penalty=0.01, score_matching=10.0, calibration=3.0,
                           likelihood=2.0, calibrate_from=0.5, calibrate_entropy="knn")
    trainer = Trainer(config, tmp_path / "handover", progress=False)
    weights, estimates = [], []
    for _ in range(config.train.steps):
        weights.append(trainer._energy_term_weights())
        estimates.append(trainer._entropy_estimate())
        trainer.train_step()
    late = TermWeights(score_matching=10.0, calibration=3.0, likelihood=2.0)
    assert weights[:5] == [TermWeights(r1=0.01)] * 5
    assert weights[5:] == [late] * 5
    assert estimates == ["mi"] * 5 + ["knn"] * 5  # the entropy hands over too
    config.train.calibrate_from = 0.0  # 0: all four from the start
    assert Trainer(config, tmp_path / "together", progress=False)._energy_term_weights() == \
        TermWeights(r1=0.01, score_matching=10.0, calibration=3.0, likelihood=2.0)
    with pytest.raises(EbgenError, match="calibrate_from is a share"):
        preset_config("toy2d", calibrate_from=1.0)


def test_metrics_log_each_energy_term_and_they_sum_to_the_loss(tmp_path):
    """metrics.jsonl carries every energy term that is on, by name, beside the total."""
    config = preset_config("toy2d", steps=4, batch_size=32, z_dim=4, energy_width=16,
                           generator_width=16, num_experts=8, num_points=2048, log_every=1,
                           gradient_penalty=0.01, score_matching=10.0, calibration=3.0,
                           likelihood=2.0, energy_magnitude=0.1, calibrate_from=0.5)
    Trainer(config, tmp_path, progress=False).fit()
    rows = [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    early = {"term_contrast", "term_r1", "term_magnitude"}
    late = {"term_contrast", "term_score_matching", "term_calibration", "term_likelihood",
            "term_magnitude"}
    assert [{k for k in row if k.startswith("term_")} for row in rows] == [early] * 2 + [late] * 2
    for row in rows:
        terms = sum(v for k, v in row.items() if k.startswith("term_"))
        assert terms == pytest.approx(row["loss_energy"], rel=1e-3, abs=1e-3)


@pytest.mark.slow
def test_ablation_benchmark_smoke_and_table_from_json(tmp_path):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "ablation_2d.py"
    results = tmp_path / "runs.json"
    common = [sys.executable, str(script), "--datasets", "8gaussians"]
    mine = "mine:gradient_penalty=1,calibrate_entropy=none"  # 'none' sets a field to None
    done = subprocess.run(common + ["--variants", "paper", "--variant", mine,
                                    "--seeds", "0", "--steps", "3", "--jobs", "1",
                                    "--json", str(results)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = json.loads(results.read_text())
    assert [(r["variant"], r["steps"], r["generator"]["num_modes"]) for r in runs] == [
        ("paper", 3, 8), ("mine", 3, 8)]
    assert runs[1]["overrides"] == {"gradient_penalty": 1, "calibrate_entropy": None}
    table = done.stdout[done.stdout.index("| variant |"):]
    again = subprocess.run(common + ["--from-json", str(results)], capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 0 and again.stdout == table
    assert "| paper | 8gaussians | 1 | " in table and "| mine | 8gaussians | 1 | " in table
    assert table.count("not met") == 2  # 3 steps meet no goal
    two_seeds = tmp_path / "two_seeds.json"
    two_seeds.write_text(json.dumps([runs[0], {**runs[0], "seed": 1}]))
    per_seed = subprocess.run(common + ["--from-json", str(two_seeds), "--per-seed"],
                              capture_output=True, text=True, timeout=60)
    assert per_seed.returncode == 0, per_seed.stderr[-2000:]
    assert "| variant | data | seed |" in per_seed.stdout
    assert "| paper | 8gaussians | 0 | " in per_seed.stdout
    assert "| paper | 8gaussians | 1 | " in per_seed.stdout


@pytest.mark.slow
def test_train_speed_benchmark_prints_every_row_against_both_gans():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "train_speed.py"
    done = subprocess.run([sys.executable, str(script), "--preset", "toy2d", "--steps", "1",
                           "--warmup", "1", "--repeats", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {line[:18].strip(): line[18:].split() for line in done.stdout.splitlines()
            if line.endswith(")")}
    assert list(rows) == ["variant", "gan plain", "gan", "ddgm paper", "ddgm default",
                          "ddgm default -R1", "ddgm default R1/4",  # toy2d has R1
                          "ddgm calib.", "ddgm default -MI"]  # no MI after the handover
    assert rows["gan plain"][3] == "1.00x" and rows["gan"][4:] == ["1.00x", "(1.00-1.00)"]


def test_score_matching_noise_anneals_over_the_calibration_half(tmp_path):
    config = preset_config("toy2d", steps=100, energy_width=16, num_experts=8,
                           generator_width=16, score_matching_std=0.01,
                           score_matching_std_final=0.004)
    trainer = Trainer(config, tmp_path / "run", progress=False)
    stds = []
    for step in (0, 49, 50, 75, 100):
        trainer.step = step
        stds.append(trainer._energy_term_weights().score_matching_std)
    assert stds[2:] == pytest.approx([0.01, 0.007, 0.004])
    assert trainer._energy_term_weights().score_matching == config.train.score_matching
    constant = Trainer(preset_config("toy2d", steps=100, energy_width=16, num_experts=8,
                                     generator_width=16), tmp_path / "constant", progress=False)
    constant.step = 90
    assert constant._energy_term_weights().score_matching_std is None  # the config's 0.01
    with pytest.raises(EbgenError, match="score_matching_std_final"):
        preset_config("toy2d", score_matching_std_final=0.0)


def test_the_handover_switches_on_fourier_features_and_the_deployed_generator(tmp_path):
    """Past calibrate_from the energy's Fourier features join (from zero) and the generator
    steps in eval mode (running statistics, no noise), so what the losses see is what it draws
    once exported; before it, batch statistics."""
    config = preset_config("toy2d", steps=6, batch_size=32, z_dim=4, energy_width=16,
                           generator_width=16, num_experts=8, num_points=2048,
                           calibrate_from=0.5, generator_as_deployed=True, fourier_features=4)
    trainer = Trainer(config, tmp_path / "run", progress=False)
    norms = [m for m in trainer.generator.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    first = trainer.energy.features[1]  # the Linear after the features: [u, sin, cos] → width
    modes, running, gains, sines = [], [], [], []
    for _ in range(config.train.steps):
        trainer.train_step()
        modes.append(trainer.generator.training)
        running.append(norms[0].running_var.clone())
        gains.append(float(trainer.energy.fourier().gain))
        sines.append(first.weight[:, 2:].detach().clone())
    assert modes == [True] * 3 + [False] * 3
    assert gains == [0.0] * 3 + [1.0] * 3
    # before: the weights reading them are held at exactly 0 (no denormals either); after,
    # the loss moves them, starting from 0, so E did not jump at the handover
    assert all(not s.any() for s in sines[:3]) and sines[3].any()
    assert not torch.equal(running[0], running[2])  # batch statistics move them early on
    assert torch.equal(running[3], running[5])  # and are what the generator uses after
    z = torch.rand(8, 4) * 2 - 1
    with torch.no_grad():
        trained = trainer.generator(z)  # the mode train_step left: the deployed one
        trainer.generator.eval()
        assert torch.equal(trained, trainer.generator(z))
    with pytest.raises(EbgenError, match="generator_as_deployed needs calibrate_from"):
        preset_config("toy2d", generator_as_deployed=True, calibrate_from=0.0)
    config.train.fourier_from = 0.0  # on from the start
    early = Trainer(config, tmp_path / "early", progress=False)
    early.train_step()
    assert float(early.energy.fourier().gain) == 1.0
    assert early.energy.features[1].weight[:, 2:].any()
    config.train.fourier_from = 0.3  # before the handover (step 3)
    between = Trainer(config, tmp_path / "between", progress=False)
    joined = []
    for _ in range(3):
        between.train_step()
        joined.append(float(between.energy.fourier().gain))
    assert joined == [0.0, 0.0, 1.0]  # steps 0, 1 off; on at step 2 (≥ 0.3 · 6)
    with pytest.raises(EbgenError, match="fourier_from"):
        preset_config("toy2d", fourier_from=1.0)


@pytest.mark.parametrize("base,members", [("data", 1), ("covariance", 1), ("covariance", 2)])
def test_r1_on_the_experts_leaves_the_fixed_base_out(base, members):
    """gradient_penalty_on="experts": R1 of E less its fixed base, for every member alone."""
    from ebgen.models import build_models

    config = preset_config("toy2d", data_dim=3, num_components=0, base=base,
                           base_min_variance=1e-4, energy_members=members, gradient_penalty=1.0,
                           gradient_penalty_on="experts", data_shift=[1.0, -2.0, 0.0],
                           data_scale=[2.0, 1.0, 0.05])
    torch.manual_seed(0)
    energy, _ = build_models(config.model)  # standardised inputs (the points' affine)
    x = torch.randn(512, 3) * torch.tensor([2.0, 1.0, 0.0])
    x[:, 2] = 0.025 * x[:, 0] + 0.001 * torch.randn(512)  # nearly a line: a stiff direction
    x = x + torch.tensor([1.0, -2.0, 0.0])
    energy.fit_base(x)
    rows, x_fake = x[:16], torch.randn(16, 3)
    weights = TermWeights(r1=1.0)
    step = energy_terms(energy, rows, x_fake, config.train, weights)
    members = list(getattr(energy, "members", [energy]))
    want = []
    for member in members:  # ½‖∇(E − base)‖², the base's energy taken out by hand
        u = rows.clone().requires_grad_(True)
        flat = member.affine.standardise(u).flatten(1) - member.base_mean
        quadratic = (flat @ member.base_precision * flat if base == "covariance"
                     else flat.pow(2) * member.base_precision)
        experts_only = member(u) - 0.5 * quadratic.sum(1)
        want.append(gradient_penalty(input_gradients(experts_only, u) * member.input_scale))
    assert step.terms["r1"].item() == pytest.approx(torch.stack(want).mean().item(), rel=1e-4)
    whole = energy_terms(energy, rows, x_fake, dataclasses.replace(
        config.train, gradient_penalty_on="energy"), weights).terms["r1"]
    if base == "covariance":  # the stiff direction's base gradient dominates all of E's
        assert whole.item() > 10 * step.terms["r1"].item()
    else:
        assert whole.item() != pytest.approx(step.terms["r1"].item(), rel=1e-2)
    with pytest.raises(EbgenError, match="needs a fixed base"):
        preset_config("toy2d", base="gaussian", gradient_penalty_on="experts")
    with pytest.raises(EbgenError, match="gradient_penalty_on must be one of"):
        preset_config("toy2d", gradient_penalty_on="generator")


def test_sample_noise_moves_the_negatives_by_its_std_in_standardised_units(tmp_path):
    from ebgen.checkpoint import unwrap

    config = preset_config("toy2d", steps=1, sample_noise=0.5, num_components=0)
    trainer = Trainer(config, tmp_path, progress=False)
    energy = unwrap(trainer.energy)
    scale = energy.input_scale
    assert torch.is_tensor(scale) and not torch.allclose(scale, torch.ones_like(scale))
    seen = []
    energy.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    trainer._set_phase()
    _, z = trainer._draw()  # seeds this step's torch stream, as train_step will
    with torch.no_grad():
        clean = trainer.generator(z)
        want = clean + 0.5 * scale * torch.randn_like(clean)
    trainer.train_step()
    torch.testing.assert_close(seen[0], want)  # the generator step's E(samples): noised
    noise = (seen[0] - clean) / scale
    assert 0.35 < noise.std().item() < 0.65
    with pytest.raises(EbgenError, match="sample_noise is a noise std"):
        preset_config("toy2d", sample_noise=-0.1)
