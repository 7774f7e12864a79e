"""Latent-space MALA (`ebgen.refine`): the change of variables, the chain's invariant law, and
the one chain run by both engines (onnxruntime on latent_potential.onnx, and PyTorch)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ebgen.refine import from_normal, held_coordinates, mala, refine_latents, to_normal


@pytest.mark.parametrize("latent", ["uniform", "normal"])
def test_the_normal_variable_carries_the_latent_prior_exactly(latent):
    u = np.random.default_rng(0).standard_normal((20_000, 3))
    z = from_normal(u, latent)
    inner = np.abs(u) < 3
    np.testing.assert_allclose(to_normal(z.astype(np.float32), latent)[inner], u[inner],
                               atol=5e-5)
    if latent == "uniform":  # N(0, 1) through 2Φ − 1 is U(−1, 1): its quantiles, its range
        values = np.sort(z.ravel())
        expected = np.linspace(-1, 1, len(values) + 2)[1:-1]
        assert np.abs(values - expected).max() < 0.02
        assert values.min() > -1 and values.max() < 1
    edge = to_normal(np.array([[-1.0, 1.0]]), latent)
    assert np.isfinite(edge).all()


def _tilted(shift: np.ndarray):
    """U(u) = ‖u − shift‖²/2: a unit normal centred on `shift`."""
    def potential(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return 0.5 * np.square(u - shift).sum(1), u - shift
    return potential


@pytest.mark.parametrize("step_size", [0.3, 1.5])
def test_mala_leaves_its_target_invariant_at_any_step_size(step_size):
    """Chains started in the target stay there (a wrong acceptance ratio drifts the variance,
    a large step more so); chains started far away reach it."""
    rng = np.random.default_rng(1)
    shift = np.array([1.0, -2.0])
    start = shift + rng.standard_normal((8000, 2))
    u, accepted = mala(start, _tilted(shift), 40, step_size, rng)
    assert 0.05 < accepted < 1.0
    np.testing.assert_allclose(u.mean(0), shift, atol=0.06)
    np.testing.assert_allclose(u.var(0), [1.0, 1.0], atol=0.08)
    far, _ = mala(np.zeros((4000, 2)) + 6.0, _tilted(shift), 200, 0.8, rng)
    np.testing.assert_allclose(far.mean(0), shift, atol=0.1)


def test_held_coordinates_stay_and_the_rest_follow_their_conditional_law():
    """With the first coordinate held (a latent component's selector) the chain samples the
    others given it: for U(u) = uᵀPu/2, P = [[2, 1], [1, 2]], u₂ | u₁ is N(−u₁/2, 1/2). Counting
    the held coordinate in the acceptance ratio would bias that law."""
    rng = np.random.default_rng(3)
    precision = np.array([[2.0, 1.0], [1.0, 2.0]])

    def potential(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return 0.5 * np.einsum("ni,ij,nj->n", u, precision, u), u @ precision

    start = np.zeros((12000, 2), dtype=np.float32)
    start[:, 0] = np.repeat([-2.0, 0.0, 2.0], 4000)
    u, accepted = mala(start, potential, 60, 1.0, rng, held=1)
    assert 0.3 < accepted < 1.0
    np.testing.assert_array_equal(u[:, 0], start[:, 0])
    for first in (-2.0, 0.0, 2.0):
        rest = u[u[:, 0] == first, 1]
        assert abs(rest.mean() + first / 2) < 0.05 and abs(rest.var() - 0.5) < 0.05
    assert held_coordinates(0) == 0 and held_coordinates(32) == 1
    z = from_normal(start[:5] + 0.3, "uniform").astype(np.float32)
    refined, _ = refine_latents(z, "uniform", potential, 5, 0.5, seed=0, held=1)
    np.testing.assert_array_equal(refined[:, 0], z[:, 0])  # bit for bit, not via Φ and back
    assert not np.allclose(refined[:, 1], z[:, 1])


def test_a_proposal_with_a_non_finite_potential_is_refused():
    def potential(u):
        value = 0.5 * np.square(u).sum(1)
        return np.where(u[:, 0] > 0.5, np.nan, value), u
    u, _ = mala(np.zeros((500, 1)), potential, 30, 0.5, np.random.default_rng(0))
    assert np.isfinite(u).all() and u.max() <= 0.5


def test_refine_latents_checks_its_arguments_and_batches_without_changing_the_chain():
    from ebgen.errors import EbgenError

    z = np.random.default_rng(3).uniform(-1, 1, (30, 2)).astype(np.float32)
    whole, rate = refine_latents(z, "uniform", _tilted(np.zeros(2)), 5, 0.3, seed=4)
    assert whole.shape == z.shape and whole.dtype == np.float32 and 0 < rate <= 1
    assert np.abs(whole).max() <= 1 and not np.allclose(whole, z)
    same, _ = refine_latents(z, "uniform", _tilted(np.zeros(2)), 5, 0.3, seed=4)
    np.testing.assert_array_equal(same, whole)
    np.testing.assert_array_equal(refine_latents(z, "uniform", _tilted(np.zeros(2)), 0, 0.3)[0],
                                  z)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(EbgenError, match="step_size must be a positive number"):
            refine_latents(z, "uniform", _tilted(np.zeros(2)), 1, bad)
    with pytest.raises(EbgenError):
        refine_latents(z, "uniform", _tilted(np.zeros(2)), -1, 0.3)


def test_mala_counts_its_moves():
    moves = []
    mala(np.zeros((5, 2)), _tilted(np.zeros(2)), 7, 0.5, np.random.default_rng(0),
         progress=lambda: moves.append(1))
    assert len(moves) == 7


def test_the_exported_latent_potential_is_the_torch_one_with_its_gradient(tiny_model_dir):
    """latent_potential.onnx (a conv energy over a transposed-conv generator: the exporter's
    convolution_backward is rewritten as convolutions) against PyTorch's own autograd at a
    batch size the export never saw, and both engines' chains from one seed are one chain."""
    import onnxruntime as ort

    import ebgen

    info = json.loads((tiny_model_dir / "model.json").read_text())
    entry = info["onnx"]["latent_potential"]
    assert entry["file"] == "latent_potential.onnx" and entry["input"] == "u"
    assert set(info["parity"]["latent_potential"]) == {"1", "7", "64"}
    model, torch_model = ebgen.load_model(tiny_model_dir, "cpu"), ebgen.load_torch(tiny_model_dir)
    assert model.can_refine
    session = ort.InferenceSession(str(tiny_model_dir / entry["file"]),
                                   providers=["CPUExecutionProvider"])
    from ebgen.potential import LatentPotential

    potential = LatentPotential(torch_model.energy_net, torch_model.generator_net,
                                torch_model.config.model.latent)
    u = np.random.default_rng(9).standard_normal((13, model.z_dim)).astype(np.float32)
    got = session.run(entry["outputs"], {"u": u})
    want = potential.value_and_grad(u)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * np.abs(w).max())
    z = model.latents(40, seed=2)
    ort_z, ort_rate = model.refine(z, steps=8, step_size=0.05, seed=6)
    torch_z, torch_rate = torch_model.refine(z, steps=8, step_size=0.05, seed=6)
    assert not np.allclose(ort_z, z) and abs(ort_rate - torch_rate) < 0.05
    # one chain: the same noise, the same moves; float error may tip a borderline accept
    same_rows = (np.abs(ort_z - torch_z).max(1) < 1e-3).mean()
    assert same_rows >= 0.75, same_rows


def test_refine_without_torch_weights_runs_in_onnxruntime_and_says_so_without_either(
        tmp_path, tiny_model_dir):
    import ebgen
    from ebgen.errors import EbgenError

    onnx_only = tmp_path / "onnx_only"
    shutil.copytree(tiny_model_dir, onnx_only)
    shutil.rmtree(onnx_only / "torch")
    refiner = ebgen.load_refiner(onnx_only)
    z, rate = refiner.refine(refiner.latents(6, seed=0), steps=3)
    assert z.shape == (6, refiner.z_dim) and 0 <= rate <= 1
    old = tmp_path / "old"  # an export from before latent_potential.onnx, without weights
    shutil.copytree(onnx_only, old)
    (old / "latent_potential.onnx").unlink()
    info = json.loads((old / "model.json").read_text())
    del info["onnx"]["latent_potential"]
    (old / "model.json").write_text(json.dumps(info))
    assert not ebgen.load_model(old, "cpu").can_refine
    with pytest.raises(EbgenError, match="no latent_potential.onnx.*carries no PyTorch weights"):
        ebgen.load_refiner(old)
    with pytest.raises(EbgenError, match="cannot refine latents without torch"):
        ebgen.load_model(old, "cpu").refine(z, steps=1)


def test_a_normal_latent_model_refines_the_same_in_onnxruntime_and_pytorch(tmp_path):
    """Normal latents: u is the latent itself (no change of variables); the exported
    potential and autograd's drive the same chain."""
    import ebgen
    from ebgen.export import export_model
    from ebgen.presets import preset_config
    from ebgen.train import train

    config = preset_config("toy2d", latent="normal", energy_width=16, num_experts=8,
                           generator_width=16, steps=40, sample_every=1000,
                           checkpoint_every=1000, num_eval_samples=64)
    train(config, tmp_path / "run", progress=False)
    model_dir = export_model(tmp_path / "run", tmp_path / "model", archive=False,
                             progress=False)
    model, torch_model = ebgen.load_model(model_dir, "cpu"), ebgen.load_torch(model_dir)
    assert model.can_refine and model.distribution == "normal"
    z = model.latents(200, seed=3)
    ort_z, ort_rate = model.refine(z, steps=10, step_size=0.1, seed=1)
    torch_z, torch_rate = torch_model.refine(z, steps=10, step_size=0.1, seed=1)
    assert 0.3 < ort_rate <= 1 and abs(ort_rate - torch_rate) < 0.05
    assert (np.abs(ort_z - torch_z).max(1) < 1e-3).mean() >= 0.9
    assert np.abs(ort_z).max() > 1.0  # unbounded, as a normal latent is


def test_an_export_that_cannot_trace_the_gradient_skips_the_file_and_says_why(
        tiny_checkpoint, tmp_path, monkeypatch):
    """Everything else is still exported; refinement then falls back to the torch weights."""
    import ebgen
    from ebgen.export import export_model
    from ebgen.export import potential_export

    def untraceable(*args, **kwargs):
        raise RuntimeError("no decomposition for aten.some_backward")

    monkeypatch.setattr(potential_export, "trace_potential", untraceable)
    out = export_model(tiny_checkpoint, tmp_path / "model", archive=False, progress=False)
    info = json.loads((out / "model.json").read_text())
    assert "some_backward" in info["onnx"]["latent_potential"]["skipped"]
    assert "latent_potential" not in info["parity"]
    assert not (out / "latent_potential.onnx").exists()
    model = ebgen.load_model(out, "cpu")
    assert not model.can_refine and model.generate(2, seed=0).shape[0] == 2
    refiner = ebgen.load_refiner(out)  # its torch/ weights
    assert not isinstance(refiner, type(model))
    assert refiner.refine(refiner.latents(3, seed=0), steps=2)[0].shape == (3, model.z_dim)
