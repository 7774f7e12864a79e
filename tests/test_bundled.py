"""The bundled pretrained models: listed, addressed by name, and as good as their cards say.

These run against the models inside the installed package (the wheel in CI), through the
same CLI and `ebgen.load_model` a user calls, with onnxruntime only.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ebgen
from ebgen.bundled import DEFAULT_MODEL, bundled_model_path, bundled_names, model_card
from ebgen.cli.main import cli
from ebgen.errors import EbgenError
from ebgen.metrics.images import image_metrics
from ebgen.metrics.points import mode_metrics
from ebgen.toy2d import get_toy_set

from conftest import MNIST

BUNDLED = ("grid", "mnist", "ring")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_three_models_ship_with_cards():
    import ebgen

    assert tuple(bundled_names()) == BUNDLED == tuple(ebgen.list_models())
    assert DEFAULT_MODEL == "mnist"
    total = 0
    for name in BUNDLED:
        card = model_card(name)
        assert card["command"].startswith("ebgen train --preset")
        assert card["train_seconds"] > 0 and card["data"]
        assert card["metrics"], f"{name} has no measured metrics"
        total += card["size_bytes"]
    # ONNX files and PyTorch weights of all three (mnist's torch/ is 3.6 MB of the 21.2;
    # each latent_potential.onnx, refinement without torch, repeats both nets' weights: 6.6;
    # mnist's 32 latent components add 0.4 MB to each of its four copies of the generator)
    assert total < 22e6, f"bundled models take {total / 1e6:.1f} MB"


def test_ebgen_models_lists_size_data_and_metrics():
    r = run("models")
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert lines[0].split()[:4] == ["NAME", "KIND", "SIZE", "DATA"]
    assert [line.split()[0] for line in lines[1:]] == list(BUNDLED)
    assert "MB" in lines[1] and "modes" in r.output and "classes_covered" in r.output
    one = json.loads(run("models", "ring", "--json").output)
    assert one["name"] == "ring" and one["metrics"]["generator.modes"] == 8
    bad = run("models", "nope")
    assert bad.exit_code == 2 and "grid, mnist, ring" in bad.output


def test_unknown_names_and_paths_are_not_models():
    assert bundled_model_path("nope") is None
    assert bundled_model_path("../pretrained") is None
    with pytest.raises(EbgenError, match="bundled model name .*mnist"):
        ebgen.load_model("no-such-model")


def test_generate_without_a_model_writes_mnist_digits(tmp_path):
    r = run("generate", "-n", 64, "--out", tmp_path / "samples.png")
    assert r.exit_code == 0, r.output
    from PIL import Image

    grid = Image.open(tmp_path / "samples.png")
    assert grid.size == (8 * 28 + 9 * 2,) * 2
    same = run("generate", "--model", "mnist", "-n", 64, "--out", tmp_path / "again.png")
    assert same.exit_code == 0
    assert (tmp_path / "again.png").read_bytes() == (tmp_path / "samples.png").read_bytes()
    both = run("generate", "ring", "--model", "mnist", "--out", tmp_path / "x.npy")
    assert both.exit_code == 2 and "two models" in both.output
    by_env = CliRunner().invoke(cli, ["generate", "-n", "5", "--out", str(tmp_path / "r.npy")],
                                env={"EBGEN_MODEL": "ring"})
    assert by_env.exit_code == 0, by_env.output
    assert np.load(tmp_path / "r.npy").shape == (5, 2)  # the ring model, named by $EBGEN_MODEL


def test_bundled_mnist_makes_recognisable_digits_of_every_class():
    model = ebgen.load_model("mnist", device="cpu")
    from ebgen.images import load_mnist
    from ebgen.pixels import uint8_to_unit

    real = uint8_to_unit(load_mnist(MNIST)["test"][0])
    metrics = image_metrics(model.generate(2000, seed=1), real)
    assert metrics["classes_covered"] == 10
    assert metrics["class_kl_uniform"] <= 0.01  # issue 18's goal; 0.0035 here
    # Issue 18's goal; the shipped model measures 94.8 % on 10,000 samples (94.9 % here).
    assert metrics["confident_share"] >= 0.92
    # 6.2 on 10,000 samples against 1,000 digits, 11.5 here against these 512 (the estimate's
    # bias grows as the sets shrink); the GAN's: 964, the model before latent components': 12.
    assert metrics["frechet_distance"] < 20


def test_score_a_real_digit_and_noise_with_the_bundled_model(tmp_path):
    from ebgen.images import load_mnist

    from PIL import Image

    digit = load_mnist(MNIST)["test"][0][0, 0]
    Image.fromarray(digit).save(tmp_path / "digit.png")
    noise = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    r = run("score", "mnist", tmp_path / "digit.png", tmp_path / "noise.png", "--json")
    assert r.exit_code == 0, r.output
    reply = json.loads(r.output)
    assert reply["model"] == "mnist"
    by_name = {row["file"].rsplit("/", 1)[-1]: row for row in reply["results"]}
    assert by_name["digit.png"]["energy"] < by_name["noise.png"]["energy"]
    assert by_name["digit.png"]["percentile"] < 90 < by_name["noise.png"]["percentile"]


@pytest.mark.parametrize("name", ["ring", "grid"])
def test_bundled_2d_log_z_matches_the_grids(name):
    """The stored log Z (model.json: the midpoint rule over the box the export found) against
    the midpoint rule on the data's box, through the served energy: log_density is normalised
    to 0.05 nats. AIS, kept beside it, fell 5 nats short on these rugged energies (README)."""
    from ebgen.metrics.points import grid_log_z

    model = ebgen.load_model(name, device="cpu")
    x = get_toy_set(model.info["provenance"]["config"]["data"]["dataset"]).sample(
        10000, np.random.default_rng(0))
    centre, half = (x.max(0) + x.min(0)) / 2, 0.75 * (x.max(0) - x.min(0)).max()
    box = (centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half)
    want = grid_log_z(lambda p: model.energy(p.astype(np.float32)), box, resolution=1000)
    assert model.log_z == pytest.approx(want, abs=0.05)
    stored = model.info["log_partition"]
    assert stored["method"].startswith("midpoint rule") and stored["ais"]["chains"] == 256


@pytest.mark.parametrize("name, modes", [("ring", 8), ("grid", 25)])
def test_bundled_2d_models_cover_every_mode_with_the_datas_spread(name, modes):
    model = ebgen.load_model(name, device="cpu")
    toy = get_toy_set(model.info["provenance"]["config"]["data"]["dataset"])
    got = mode_metrics(model.generate(2500, seed=0).astype(np.float64), toy)
    assert got["modes"] == modes and got["high_quality"] >= 0.9  # no bridges between modes
    report = json.loads(run("eval", name, "--json").output)  # the energy: a calibrated density
    gen, energy = report["generator"], report["energy"]
    assert gen["modes"] == modes and energy["modes"] == modes and report["kl_data_energy"] < 0.2
    # Not too sharp (the MI-only recipe's local MMD² was 43× and 9× the floor, recall 0.78-0.86),
    # no samples between modes (one connected latent gave precision 0.81-0.89) and no floor of
    # energy mass off the modes (the MI-only recipe's exact samples' MMD² was 7×).
    assert gen["recall_ratio"] > 0.9 and gen["mmd2_local_ratio"] < 5
    assert gen["precision_ratio"] > 0.95
    assert energy["mmd2_ratio"] < 4 and energy["precision_ratio"] > 0.9


def test_eval_a_bundled_model_with_plots(tmp_path):
    r = run("eval", "ring", "--plots", tmp_path / "plots", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["source"] == "model directory" and report["generator"]["modes"] == 8
    for name in ("samples_energy.png", "energy_histogram.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 1000


@pytest.mark.mnist
def test_eval_bundled_mnist_on_real_digits_with_anomaly_scores(tmp_path):
    r = run("eval", "mnist", "--data", MNIST, "--num-samples", 500, "--anomaly",
            "--plots", tmp_path, "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["energy_data_mean"] < report["energy_samples_mean"] < report["energy_noise_mean"]
    assert report["classes_covered"] == 10 and report["classifier_accuracy"] >= 0.98
    for corruption in ("noise", "blur", "inverted", "shifted"):
        assert report["anomaly"]["energy"][corruption] >= 0.9, corruption
        assert 0 <= report["anomaly"]["pca"][corruption] <= 1
    assert {p.name for p in tmp_path.iterdir()} >= {"samples.png", "data.png",
                                                     "energy_histogram.png"}


@pytest.mark.mnist
def test_eval_refines_the_bundled_digits_and_says_how(tmp_path):
    """Latent MALA on E(G(z)): on the same latents the refined digits are surer and closer
    to real ones in the classifier's features, every class still drawn."""
    reports = {}
    for steps in (0, 20):
        r = run("eval", "mnist", "--data", MNIST, "--num-samples", 600, "--refine-steps", steps,
                "--refine-step-size", 0.07, "--json")
        assert r.exit_code == 0, r.output
        reports[steps] = json.loads(r.stdout)  # the refinement's bar is on stderr
    raw, refined = reports[0], reports[20]
    assert "refine" not in raw
    assert refined["refine"]["steps"] == 20 and 0.3 < refined["refine"]["accepted"] < 1
    assert refined["refine"]["engine"] == "onnxruntime"  # the bundled latent_potential.onnx
    assert refined["confident_share"] >= raw["confident_share"] - 0.01  # 94.8 → 95.3 % (10,000)
    assert refined["classes_covered"] == 10
    # Each sample stays in its latent component (the chain holds z's first coordinate), so
    # the classes keep their shares: a chain free to cross components lost a class in 30 moves.
    assert refined["class_kl_uniform"] <= 0.03
    assert refined["frechet_distance"] < 2 * raw["frechet_distance"]
    assert refined["energy_samples_mean"] < raw["energy_samples_mean"]


def test_eval_refines_a_points_model_on_the_same_latents():
    """2-D: the refined report differs from the raw one only through the samples."""
    reports = [json.loads(run("eval", "grid", "--num-samples", 500, "--refine-steps", steps,
                              "--json").stdout) for steps in (0, 10)]
    raw, refined = reports
    assert refined["refine"]["steps"] == 10 and 0.3 < refined["refine"]["accepted"] <= 1
    # Each sample stays in its latent component, so the modes keep their shares.
    for key in ("share_ratio_min", "share_ratio_max", "modes"):
        assert abs(refined["generator"][key] - raw["generator"][key]) <= 0.05, key
    assert refined["generator"]["high_quality"] >= raw["generator"]["high_quality"] - 0.02
    assert refined["generator"] != raw["generator"] and refined["energy"] == raw["energy"]


def test_eval_refines_in_onnxruntime_without_the_pytorch_weights(tmp_path, tiny_model_dir):
    """A model directory without torch/ refines through latent_potential.onnx; one exported
    before that file existed, and without weights, is refused in one line."""
    import shutil

    onnx_only = tmp_path / "onnx_only"
    shutil.copytree(tiny_model_dir, onnx_only)
    shutil.rmtree(onnx_only / "torch")
    r = run("eval", onnx_only, "--num-samples", 50, "--refine-steps", 5, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["refine"]["engine"] == "onnxruntime"
    old = tmp_path / "old"
    shutil.copytree(onnx_only, old)
    (old / "latent_potential.onnx").unlink()
    info = json.loads((old / "model.json").read_text())
    del info["onnx"]["latent_potential"]
    (old / "model.json").write_text(json.dumps(info))
    r = run("eval", old, "--num-samples", 50, "--refine-steps", 5)
    assert r.exit_code == 2 and "carries no PyTorch weights" in r.output
    assert "no latent_potential.onnx" in r.output and len(r.output.strip().splitlines()) == 1


def test_eval_of_bundled_mnist_without_its_data_says_what_to_pass():
    r = run("eval", "mnist")
    assert r.exit_code == 2 and "--data" in r.output


def test_the_torch_free_path_serves_bundled_models():
    code = ("import sys, ebgen; m = ebgen.load_model('mnist', device='cpu'); "
            "m.score(m.generate(4, seed=0)); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "retrain_bundled.py"


@pytest.mark.skipif(not SCRIPT.is_file(), reason="needs the source checkout")
def test_retrain_script_prints_the_readme_tables_from_the_cards():
    out = subprocess.run([sys.executable, str(SCRIPT), "--table"], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert "**DDGM (bundled)**" in out and "GAN objective, same nets" in out
    assert "PCA-50 reconstruction error" in out and "| ring | " in out and "| 8/8 |" in out
    readme = (SCRIPT.parents[1] / "README.md").read_text()
    assert out.strip() in readme, "README's results tables are stale: rerun --table"


@pytest.mark.skipif(not SCRIPT.is_file(), reason="needs the source checkout")
def test_retrain_script_packages_only_a_finished_run_of_the_recipe(tmp_path):
    """`--checkpoint RUN` refuses a run whose config is not the recipe's, naming the fields,
    and more than one model."""
    from ebgen.presets import preset_config
    from ebgen.train import train

    train(preset_config("toy2d", steps=2, dataset="8gaussians", seed=0, energy_width=8),
          tmp_path / "other", progress=False)
    done = subprocess.run([sys.executable, str(SCRIPT), "--only", "ring", "--checkpoint",
                           str(tmp_path / "other")], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "not a finished run of the ring recipe" in done.stderr
    assert "model.energy_width: run 8, recipe 256" in done.stderr
    assert "train.steps: run 2, recipe 20000" in done.stderr
    both = subprocess.run([sys.executable, str(SCRIPT), "--only", "ring", "grid", "--checkpoint",
                           str(tmp_path / "other")], capture_output=True, text=True, timeout=120)
    assert both.returncode == 2 and "one --only model" in both.stderr
