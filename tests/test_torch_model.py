"""PyTorch weights travel: `ebgen export` writes them into the model directory, and
`ebgen.load_torch` gives nets that agree with onnxruntime and provide gradients."""
from __future__ import annotations

import json

from pathlib import Path

import numpy as np
import pytest

import ebgen
from ebgen.errors import EbgenError


def test_exported_model_directory_carries_weights_that_match_onnx(tiny_model_dir, model):
    assert (tiny_model_dir / "torch" / "config.json").is_file()
    assert model.info["torch"] == "torch"
    torch_model = ebgen.load_torch(tiny_model_dir)
    x = model.generate(6, seed=3)
    np.testing.assert_allclose(torch_model.generate(6, seed=3), x, atol=1e-5)
    np.testing.assert_allclose(torch_model.energy(x), model.energy(x), rtol=1e-4, atol=1e-3)
    with pytest.raises(EbgenError, match="NaN"):
        torch_model.energy(np.full_like(x, np.nan))


def test_energy_grad_is_the_gradient_of_the_energy():
    model = ebgen.load_torch("ring")
    x = np.random.default_rng(0).uniform(-2.5, 2.5, (200, 2))
    grad = model.energy_grad(x)
    unit = grad / np.linalg.norm(grad, axis=1, keepdims=True)
    e = model.energy(x)
    assert np.all(model.energy(x - 1e-3 * unit) < e)   # against the gradient: downhill
    assert np.all(model.energy(x + 1e-3 * unit) > e)
    eps = 1e-3  # central differences (piecewise-linear energy: a few straddle a kink)
    steps = eps * np.eye(2)
    numeric = np.stack([(model.energy(x + step) - model.energy(x - step)) / (2 * eps)
                        for step in steps], 1)
    relative = np.linalg.norm(numeric - grad, axis=1) / np.linalg.norm(grad, axis=1)
    assert np.median(relative) < 0.01 and np.mean(relative < 0.05) > 0.9
    z = model.latents(3, seed=1)
    assert model.latent_energy_grad(z).shape == z.shape


def test_interpolation_keeps_the_ends_and_the_latent_range():
    model = ebgen.load_torch("grid")
    z0, z1 = model.latents(2, seed=0)
    path = model.interpolate(z0, z1, 5)
    assert path.shape == (5, len(z0))
    np.testing.assert_allclose(path[[0, -1]], [z0, z1], atol=1e-6)
    assert np.abs(path).max() <= 1.0  # a uniform latent stays in its cube
    assert model.generate_from_latents(path).shape == (5, 2)


def test_models_without_weights_say_how_to_get_them(tiny_model_dir, tmp_path):
    import shutil

    copy = tmp_path / "old"
    shutil.copytree(tiny_model_dir, copy)
    shutil.rmtree(copy / "torch")
    with pytest.raises(EbgenError, match="carries no PyTorch weights"):
        ebgen.load_torch(copy)


def test_latent_mala_moves_towards_low_energy_and_stays_in_the_latent_cube():
    model = ebgen.load_torch("grid")
    z = model.latents(500, seed=2)
    same, _ = model.refine(z, steps=0)
    np.testing.assert_array_equal(same, z)
    refined, accepted = model.refine(z, steps=10, step_size=0.05, seed=1)
    assert 0.2 < accepted <= 1.0 and np.abs(refined).max() <= 1.0
    raw_energy = model.energy(model.generate_from_latents(z)).mean()
    assert model.energy(model.generate_from_latents(refined)).mean() < raw_energy
    again, _ = model.refine(z, steps=10, step_size=0.05, seed=1)
    np.testing.assert_array_equal(again, refined)  # seeded
    with pytest.raises(EbgenError, match="step_size must be a positive number"):
        model.refine(z, steps=1, step_size=0.0)


def test_generate_refine_steps_from_the_cli(tmp_path, tiny_model_dir):
    import shutil

    from click.testing import CliRunner

    from ebgen.cli.main import cli

    out = tmp_path / "grid.npy"
    result = CliRunner().invoke(cli, ["generate", "--model", "grid", "-n", "50",
                                      "--refine-steps", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "MALA steps" in result.output and np.load(out).shape == (50, 2)
    raw = tmp_path / "raw.npy"
    CliRunner().invoke(cli, ["generate", "--model", "grid", "-n", "50", "--out", str(raw)])
    assert not np.allclose(np.load(raw), np.load(out))
    onnx_only = tmp_path / "onnx_only"  # no torch: onnxruntime runs latent_potential.onnx
    shutil.copytree(tiny_model_dir, onnx_only)
    shutil.rmtree(onnx_only / "torch")
    refined = CliRunner().invoke(cli, ["generate", "--model", str(onnx_only), "-n", "4",
                                       "--refine-steps", "5", "--out", str(tmp_path / "r.npy")])
    assert refined.exit_code == 0, refined.output
    assert np.load(tmp_path / "r.npy").shape == (4, 1, 8, 8)
    old = tmp_path / "old"  # ... nor latent_potential.onnx: an export from before it existed
    shutil.copytree(onnx_only, old)
    (old / "latent_potential.onnx").unlink()
    info = json.loads((old / "model.json").read_text())
    del info["onnx"]["latent_potential"]
    (old / "model.json").write_text(json.dumps(info))
    refused = CliRunner().invoke(cli, ["generate", "--model", str(old), "-n", "4",
                                       "--refine-steps", "5", "--out", str(tmp_path / "m.png")])
    assert refused.exit_code == 2 and "carries no PyTorch weights" in refused.output
    assert "no latent_potential.onnx" in refused.output


def test_the_bundled_mnist_carries_weights_that_match_its_onnx_files():
    """Its torch/ was rebuilt from its ONNX files (`scripts/retrain_bundled.py
    --weights-from-onnx`: the generator's folded batch norms come back as identities carrying
    the shift); on real digits and on its own samples it is the same model."""
    model, torch_model = ebgen.load_model("mnist", device="cpu"), ebgen.load_torch("mnist")
    from ebgen.images import read_idx

    digits = read_idx(Path(__file__).parent / "data" / "mnist" / "t10k-images-idx3-ubyte.gz")
    digits = digits[:32, None]
    np.testing.assert_allclose(torch_model.energy(digits), model.energy(digits),
                               rtol=1e-4, atol=2e-3)
    samples = model.generate(16, seed=5)
    np.testing.assert_allclose(torch_model.generate(16, seed=5), samples, atol=1e-5)
    grad = torch_model.energy_grad(samples[:4])
    assert grad.shape == samples[:4].shape and np.isfinite(grad).all()
    refined, accepted = torch_model.refine(torch_model.latents(8, seed=1), steps=3,
                                           step_size=0.01, seed=0)
    assert refined.shape == (8, model.z_dim) and 0.0 <= accepted <= 1.0
