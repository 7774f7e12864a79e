"""The `ebgen` command line: help, train/eval end to end, one-line errors with exit code 2."""
import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ebgen.cli.main import cli
from ebgen.toy2d import get_toy_set

MNIST = Path(__file__).parent / "data" / "mnist"


def run(*args: str) -> "CliRunner.invoke":
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_help_is_instant_and_imports_no_torch():
    code = ("import sys; from ebgen.cli.main import cli; "
            "assert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True)
    result = run("--help")
    assert result.exit_code == 0 and "train" in result.output and "eval" in result.output
    assert "Examples" in run("train", "--help").output
    module = subprocess.run([sys.executable, "-m", "ebgen", "models"], capture_output=True,
                            text=True, check=True)
    assert "mnist" in module.stdout  # `python -m ebgen` is the same command line


def test_train_and_eval_tiny_from_the_cli(tmp_path):
    out = tmp_path / "tiny"
    result = run("train", "--preset", "tiny", "--steps", "6", "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads(run("eval", str(out), "--json", "--num-samples", "64").output)
    assert report["step"] == 6 and report["kind"] == "image"
    assert {"energy_data_mean", "energy_samples_mean", "energy_noise_mean"} <= set(report)
    assert report["source"] == "checkpoint" and "classes_covered" not in report  # 8×8: no
    #                                                               MNIST classifier metrics
    plots = tmp_path / "plots"
    report = json.loads(run("eval", str(out), "--json", "--num-samples", "64", "--anomaly",
                            "--plots", str(plots)).output)
    assert set(report["anomaly"]["energy"]) == {"noise", "blur", "inverted", "shifted"}
    assert all(0 <= v <= 1 for v in report["anomaly"]["pca"].values())
    assert sorted(p.name for p in plots.iterdir()) == ["data.png", "energy_histogram.png",
                                                       "samples.png"]
    assert "anomaly" in run("eval", str(out), "--anomaly", "--num-samples", "64").output


@pytest.mark.mnist
def test_train_on_mnist_digits_resized(tmp_path):
    out = tmp_path / "m"
    result = run("train", "--preset", "tiny", "--data", str(MNIST), "--steps", "4", "--out",
                 str(out), "--quiet")
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["path"] == str(MNIST) and config["model"]["image_size"] == 8


def test_toy2d_train_and_eval(tmp_path):
    out = tmp_path / "ring"
    assert run("train", "--preset", "toy2d", "--dataset", "8gaussians", "--steps", "30",
               "--out", str(out), "--quiet").exit_code == 0
    report = json.loads(run("eval", str(out), "--json", "--num-samples", "500").output)
    gen = report["generator"]
    assert report["dataset"] == "8gaussians" and report["density"] == "exact"
    assert gen["num_modes"] == 8 and 0 <= gen["modes"] <= 8
    assert 0 <= gen["high_quality"] <= 1 and np.isfinite(report["kl_data_energy"])
    assert gen["mmd2_ratio"] > 0 and 0 <= report["energy"]["precision"] <= 1
    assert (out / "samples" / "step_0000030.png").exists()


def test_a_model_of_a_data_file_is_judged_against_that_file(tmp_path):
    """Not the preset's built-in ring: the file's own held-out points, a KDE, its name."""
    points = tmp_path / "moons.npy"
    np.save(points, get_toy_set("moons").sample(3000, np.random.default_rng(0)))
    out = tmp_path / "mine"
    assert run("train", "--preset", "toy2d", "--data", str(points), "--steps", "20",
               "--out", str(out), "--quiet").exit_code == 0
    assert json.loads((out / "config.json").read_text())["data"]["dataset"] is None
    r = run("eval", str(out), "--json", "--num-samples", "500", "--plots", str(tmp_path / "p"))
    report = json.loads(r.output)
    assert report["dataset"] == str(points) and report["data"] == str(points)
    assert report["density"] == "kde" and report["num_reference"] == 300  # its held-out 10 %
    assert "modes" not in report["generator"] and "data_high_quality" not in report
    text = run("eval", str(out), "--num-samples", "500").output
    assert "moons.npy" in text and "8gaussians" not in text


def _error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [l for l in result.output.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_bad_inputs_give_one_line_errors(tmp_path):
    out = str(tmp_path / "o")
    assert "does not exist" in _error(run("train", "--data", str(tmp_path / "missing"), "--out", out))
    assert "unknown preset" in _error(run("train", "--preset", "huge", "--out", out))
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((10, 3, 2), np.float32))
    assert "expected an N×D array" in _error(run("train", "--data", str(bad), "--out", out))
    idx = tmp_path / "idx"
    idx.mkdir()
    (idx / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03garbage"))
    assert "corrupt" in _error(run("train", "--preset", "mnist", "--data", str(idx), "--out", out))
    assert "needs --data" in _error(run("train", "--preset", "mnist", "--out", out))
    assert "not exist" in _error(run("eval", str(tmp_path / "nothing")))


def test_cli_exit_code_from_a_real_process(tmp_path):
    result = subprocess.run([sys.executable, "-m", "ebgen.cli.main", "train", "--preset", "nope"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr


def test_every_config_field_has_a_train_option_made_from_it():
    import dataclasses

    from ebgen.cli.train import train_command
    from ebgen.config import SECTIONS

    options = {p.name: p for p in train_command.params}
    for _, kind in SECTIONS:
        for field in dataclasses.fields(kind):
            if field.metadata.get("option") == "-":  # fitted to the data, not chosen
                assert field.name not in options
                continue
            assert field.name in options, field.name
            if field.metadata.get("choices"):  # choices from the constants, once
                assert set(field.metadata["choices"]) <= set(options[field.name].type.choices)
    assert options["z_dim"].opts == ["--z-dim"] and options["path"].opts == ["--data"]
    assert "Adam β₂" in options["beta2"].help and "else 0.9" in options["beta2"].help


def test_train_from_a_saved_config_with_checked_overrides(tmp_path):
    first = tmp_path / "first"
    assert run("train", "--preset", "tiny", "--steps", "2", "--energy-width", "4",
               "--out", str(first), "--quiet").exit_code == 0
    second = tmp_path / "second"
    result = run("train", "--config", str(first / "config.json"), "--steps", "3", "--seed", "5",
                 "--out", str(second), "--quiet")
    assert result.exit_code == 0, result.output
    saved = json.loads((second / "config.json").read_text())
    assert saved["model"]["energy_width"] == 4 and saved["train"]["steps"] == 3
    assert saved["train"]["seed"] == 5 and saved["preset"] == "tiny"
    bad = run("train", "--config", str(first), "--calibrate-from", "1.5", "--out",
              str(tmp_path / "bad"))
    assert bad.exit_code == 2 and "calibrate_from is a share" in bad.output
    resumed = run("train", "--out", str(first), "--resume", "--steps", "3", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    refused = run("train", "--out", str(first), "--resume", "--z-dim", "3")
    assert refused.exit_code == 2 and "--z-dim" in refused.output
    refused = run("train", "--out", str(first), "--resume", "--steps", "-4")
    assert refused.exit_code == 2 and "steps must be >= 0" in refused.output


def test_none_sets_an_optional_field_to_none():
    from ebgen.cli.options import config_overrides
    from ebgen.presets import preset_config

    fields = config_overrides({"calibrate_entropy": "none", "exclude_classes": ()})
    config = preset_config("toy2d", **fields)
    assert config.train.calibrate_entropy is None and config.data.exclude_classes == []
    assert preset_config("toy2d").train.calibrate_entropy == "knn"  # what "none" replaced
