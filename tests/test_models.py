"""The two networks, the entropy estimate and the losses."""
import math

import numpy as np
import pytest
import torch

from ebgen.errors import EbgenError
from ebgen.config import ENERGY_ACTIVATIONS, IMAGE_SIZES, ModelConfig
from ebgen.presets import preset_config
from ebgen.latents import sample_latents
from ebgen.losses import (batchnorm_entropy, energy_loss, gan_discriminator_loss,
                          gaussian_entropy, generator_loss)
from ebgen.layers import FourierFeatures, SmoothLeakyReLU
from ebgen.models import EnergyModel, Generator, build_models


@pytest.mark.parametrize("size", IMAGE_SIZES)
@pytest.mark.parametrize("channels", [1, 3])
def test_image_nets_shapes(size, channels):
    cfg = ModelConfig(kind="image", image_size=size, channels=channels, z_dim=8, num_experts=4,
                      energy_width=4, generator_width=4)
    energy, generator = build_models(cfg)
    z = torch.from_numpy(sample_latents(3, 8, seed=0))
    x = generator(z)
    assert x.shape == (3, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1  # tanh output: the model's pixel range
    assert energy(x).shape == (3,)


def test_point_nets_shapes():
    energy, generator = build_models(ModelConfig(kind="points", z_dim=4, depth=2))
    x = generator(torch.rand(5, 4))
    assert x.shape == (5, 2) and energy(x).shape == (5,)


def test_data_base_charges_for_changes_where_the_data_never_varies():
    cfg = ModelConfig(kind="image", image_size=8, z_dim=4, num_experts=4, energy_width=4,
                      generator_width=4, base="data", base_min_variance=0.05)
    energy = EnergyModel(cfg)
    x = -torch.ones(64, 1, 8, 8)
    x[:, :, 2:6, 2:6] = torch.rand(64, 1, 4, 4) * 2 - 1  # only the centre varies
    energy.fit_base(x)
    assert torch.allclose(energy.base_mean.view(8, 8)[0], -torch.ones(8), atol=1e-6)
    assert energy.base_precision.max() == pytest.approx(1 / 0.05)  # the floor, at the border
    with torch.no_grad():
        energy.experts.weight.zero_()
        typical = energy(x[:1])
        inked = x[:1].clone()
        inked[0, 0, 0, 0] = 1.0  # one border pixel turned on: +½·2²/0.05 = 40
        assert float(energy(inked) - typical) == pytest.approx(40.0, rel=1e-4)
    assert "base_mean" in energy.state_dict() and not hasattr(energy, "log_sigma")
    with pytest.raises(Exception, match="base must be"):
        ModelConfig(base="nope")


def test_every_generator_hidden_layer_has_batch_norm():
    generator = Generator(ModelConfig(kind="points", depth=3))
    assert len(generator.batch_norms()) == 3
    image = Generator(ModelConfig(kind="image", image_size=32))  # 4 → 8 → 16 → 32
    assert len(image.batch_norms()) == 3


def test_gaussian_entropy_closed_form():
    for sigma in (0.1, 1.0, 3.0):
        expected = 0.5 * math.log(2 * math.pi * math.e * sigma ** 2)
        assert gaussian_entropy(torch.tensor(sigma)).item() == pytest.approx(expected, rel=1e-5)


def test_batchnorm_entropy_sums_every_scale():
    generator = Generator(ModelConfig(kind="points", depth=3, generator_width=16))
    # Fresh batch norms have γ = 1: H = units × ½ log(2πe).
    assert batchnorm_entropy(generator).item() == pytest.approx(48 * 0.5 * math.log(2 * math.pi * math.e),
                                                                rel=1e-5)
    with torch.no_grad():
        for bn in generator.batch_norms():
            bn.weight.fill_(2.0)
    assert batchnorm_entropy(generator).item() == pytest.approx(
        48 * 0.5 * math.log(2 * math.pi * math.e * 4.0), rel=1e-5)


def test_batchnorm_entropy_matches_empirical_entropy_of_the_layer():
    """A batch-normalised Gaussian pre-activation has std |γ|: compare with its sample entropy."""
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm1d(4)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, 1.0, 2.0, -3.0]))
    h = bn(torch.randn(200_000, 4) * 7 + 3)
    empirical = 0.5 * torch.log(2 * math.pi * math.e * h.var(0))
    assert torch.allclose(gaussian_entropy(bn.weight), empirical, atol=1e-2)


def test_lower_energy_means_more_probable():
    """With the experts switched off, E is the Gaussian prior: it grows away from the bias."""
    energy = EnergyModel(ModelConfig(kind="points"))
    with torch.no_grad():
        energy.experts.weight.zero_()
        energy.experts.bias.fill_(-50.0)  # softplus ≈ 0
    e = energy(torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 3.0]]))
    assert e[0] < e[1] < e[2]
    assert e[1].item() == pytest.approx(0.5, abs=1e-6)  # ‖x‖²/2σ², σ = 1


def test_energy_training_lowers_data_energy_below_noise():
    """A few energy steps of either objective leave data energies below those of noise."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    data = torch.from_numpy(rng.normal(1.0, 0.1, size=(256, 2)).astype(np.float32))
    for loss_fn in (energy_loss, gan_discriminator_loss):
        energy = EnergyModel(ModelConfig(kind="points", energy_width=32, num_experts=16))
        opt = torch.optim.Adam(energy.parameters(), lr=1e-2)
        for _ in range(100):
            noise = torch.rand(256, 2) * 4 - 2
            loss = loss_fn(energy(data), energy(noise))
            opt.zero_grad()
            loss.backward()
            opt.step()
        noise = torch.rand(256, 2) * 4 - 2
        assert energy(data).mean() < energy(noise).mean() - 1.0


def test_generator_loss_rewards_entropy():
    e = torch.zeros(4)
    assert generator_loss(e, torch.tensor(2.0)) < generator_loss(e, torch.tensor(1.0))


def test_presets_build():
    for name in ("tiny", "toy2d", "mnist", "cifar10", "celeba64"):
        cfg = preset_config(name)
        energy, generator = build_models(cfg.model)
        z = torch.from_numpy(sample_latents(2, cfg.model.z_dim, seed=1))
        generator.eval()
        assert generator(z).shape == (2, *cfg.model.sample_shape)


@pytest.mark.parametrize("latent", ["uniform", "normal"])
def test_latent_components_split_the_latent_equally_and_jump_between_components(latent):
    config = ModelConfig(kind="points", z_dim=4, num_components=8, latent=latent)
    generator = Generator(config).eval()
    z = torch.from_numpy(sample_latents(16000, 4, seed=0, distribution=latent))
    shares = np.bincount(generator.components.index(z).numpy(), minlength=8) / len(z)
    assert np.allclose(shares, 1 / 8, atol=0.01)
    # Two latents a hair apart on either side of a component boundary land in different
    # components and get different offsets: G may jump there, as it cannot without components.
    boundary = torch.zeros(2, 4)
    boundary[:, 0] = torch.tensor([-1e-4, 1e-4])
    if latent == "uniform":
        boundary[:, 0] += 0.25  # u = 0.625 = 5/8
    index = generator.components.index(boundary)
    assert index[0] != index[1]
    with torch.no_grad():
        x = generator(boundary)
    assert (x[0] - x[1]).abs().max() > 100 * (generator(boundary[:1] * 1.00001) - x[:1]).abs().max()


def test_latent_components_split_an_image_generator_too():
    """Image generators take the same components: an offset per component on the first
    (linear) layer, so digits of different classes need no bridge of in-between samples."""
    config = ModelConfig(kind="image", image_size=8, channels=1, z_dim=6, generator_width=4,
                         num_components=4)
    generator = Generator(config).eval()
    assert generator.components.offsets.shape == (4, generator.net[0].out_features)
    z = torch.from_numpy(sample_latents(8000, 6, seed=0))
    shares = np.bincount(generator.components.index(z).numpy(), minlength=4) / len(z)
    assert np.allclose(shares, 1 / 4, atol=0.02)
    boundary = torch.zeros(2, 6)
    boundary[:, 0] = torch.tensor([-1e-4, 1e-4])  # u = 1/2: between components 1 and 2
    with torch.no_grad():
        x = generator(boundary)
    assert x.shape == (2, 1, 8, 8)
    assert (x[0] - x[1]).abs().max() > 1e-2


def test_latent_components_must_not_be_negative():
    from ebgen.errors import EbgenError
    with pytest.raises(EbgenError, match="num_components"):
        ModelConfig(kind="image", image_size=8, num_components=-1)


ENERGY_VARIANTS = ([{"energy_activation": a} for a in ENERGY_ACTIVATIONS]
                   + [{"quadratic_experts": 4}, {"fourier_features": 6}])


@pytest.mark.parametrize("fields", ENERGY_VARIANTS,
                         ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()))
def test_every_energy_variant_exports_to_onnx_with_parity(fields, tmp_path):
    from ebgen.export import check_parity, export_onnx
    from ebgen.names import ENERGY_INPUT, ENERGY_OUTPUT

    cfg = ModelConfig(kind="points", z_dim=4, depth=2, energy_width=16, num_experts=8, **fields)
    energy, _ = build_models(cfg)
    if cfg.quadratic_experts:
        with torch.no_grad():
            energy.quadratic.weight.normal_()  # large enough that a wrong graph would show
    path = export_onnx(energy, torch.zeros(3, 2), tmp_path / "energy.onnx", ENERGY_INPUT,
                       ENERGY_OUTPUT)
    diffs = check_parity(path, energy, lambda n, seed: np.random.default_rng(seed)
                         .normal(size=(n, 2)).astype(np.float32))
    assert set(diffs) and max(diffs.values()) < 1e-3


def test_quadratic_experts_draw_bowls_where_softplus_experts_draw_cones():
    """Far from the features' kinks, leaky-ReLU features make the energy linear along a
    line; the quadratic term makes it grow as t²."""
    line = torch.linspace(-300, 300, 601).unsqueeze(1) * torch.tensor([[0.6, 0.8]])
    grown = {}
    for quadratic in (0, 4):
        torch.manual_seed(0)
        cfg = ModelConfig(kind="points", z_dim=4, depth=2, energy_width=16, num_experts=8,
                          quadratic_experts=quadratic, standardize=False)
        energy, _ = build_models(cfg)
        with torch.no_grad():
            energy.log_sigma.fill_(5.0)  # a nearly flat base: only the experts are left
            if quadratic:
                energy.quadratic.weight.normal_()
            e = energy(line).double()
        # the rise from 200 to 300 over the rise from 100 to 200: 1 for a line, 5/3 for t²
        grown[quadratic] = ((e[600] - e[500]) / (e[500] - e[400])).item()
    assert grown[0] == pytest.approx(1.0, abs=0.02)
    assert grown[4] == pytest.approx(5 / 3, abs=0.1)


def test_quadratic_experts_must_not_be_negative():
    from ebgen.errors import EbgenError
    with pytest.raises(EbgenError, match="quadratic_experts"):
        ModelConfig(quadratic_experts=-1)


def test_fourier_features_are_the_input_beside_fixed_sines_and_cosines():

    layer = FourierFeatures(2, 50, max_frequency=20.0)
    norms = layer.frequencies.norm(dim=1)
    assert norms.min() >= 1.0 and norms.max() <= 20.0 and norms.max() > 10.0
    assert torch.equal(layer.frequencies, FourierFeatures(2, 50, 20.0).frequencies)
    u = torch.randn(7, 2)
    out = layer(u)
    assert out.shape == (7, layer.out_dim) == (7, 102)
    assert torch.equal(out[:, :2], u)
    assert torch.allclose(out[:, 2:52] ** 2 + out[:, 52:] ** 2, torch.ones(7, 50))
    assert "features.0.frequencies" in build_models(ModelConfig(
        kind="points", fourier_features=3))[0].state_dict()  # saved with the weights


@pytest.mark.parametrize("fields", [{"fourier_features": -1},
                                    {"fourier_features": 4, "fourier_max_frequency": 0.5},
                                    {"fourier_features": 4, "kind": "image"}])
def test_fourier_features_are_checked(fields):
    from ebgen.errors import EbgenError
    with pytest.raises(EbgenError, match="fourier"):
        ModelConfig(**fields)


def test_smooth_leaky_relu_keeps_the_slopes_and_rounds_the_corner():
    h = torch.tensor([-40.0, -1.0, 0.0, 1.0, 40.0], requires_grad=True)
    y = SmoothLeakyReLU()(h)
    slope, = torch.autograd.grad(y.sum(), h, create_graph=True)
    curvature, = torch.autograd.grad(slope.sum(), h)
    assert slope[0].item() == pytest.approx(0.2) and slope[-1].item() == pytest.approx(1.0)
    assert torch.all(slope[1:] > slope[:-1])          # monotone and convex
    assert curvature[2].item() == pytest.approx(0.2)  # 0.8 · softplus''(0) = 0.8 / 4


def test_covariance_base_starts_the_energy_as_the_datas_gaussian_fit():
    from ebgen.metrics.point_anomaly import GaussianBaseline

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(5000, 3)) @ np.array([[2.0, 0.0, 0.0], [1.5, 0.3, 0.0],
                                                [0.0, 1.0, 1.0]]) + [100.0, -3.0, 7.0])
    cfg = ModelConfig(kind="points", data_dim=3, depth=1, energy_width=8, num_experts=4,
                      base="covariance", base_min_variance=1e-6,
                      data_shift=x.mean(0).tolist(), data_scale=x.std(0).tolist())
    energy, _ = build_models(cfg)
    energy.fit_base(torch.from_numpy(x).float())
    with torch.no_grad():
        energy.experts.bias.fill_(-50.0)  # softplus ≈ 0: only the base is left
    e = energy(torch.from_numpy(x[:100]).float()).detach().double().numpy()
    maha = GaussianBaseline().fit(x).score(x[:100])
    np.testing.assert_allclose(e - e.mean(), 0.5 * (maha - maha.mean()), atol=1e-2)
    assert ModelConfig(kind="image", base="covariance", image_size=28).base == "covariance"
    with pytest.raises(EbgenError, match="D ≤ 4096"):  # 3 × 64 × 64 = 12,288 values a sample
        ModelConfig(kind="image", base="covariance", image_size=64, channels=3)


def test_fourier_features_switched_on_join_from_zero():
    energy, _ = build_models(ModelConfig(kind="points", fourier_features=8))
    x = torch.randn(16, 2)
    with torch.no_grad():
        on = energy(x)
        energy.switch_fourier(False)
        off = energy(x)
        energy.switch_fourier(True)
        assert torch.equal(energy(x), off) and not torch.allclose(on, off)
    assert float(energy.fourier().gain) == 1.0 and energy.features[1].weight[:, 2:].abs().sum() == 0
    assert build_models(ModelConfig(kind="points"))[0].fourier() is None


def test_fourier_features_leave_the_input_columns_initialised_as_without_them():
    """PyTorch draws a Linear's weights within ±1/√fan-in: 258 inputs would start the two
    coordinates' weights 11× smaller than the energy without features starts them."""
    energy, _ = build_models(ModelConfig(kind="points", fourier_features=128))
    first = energy.features[1]
    bound = 1 / math.sqrt(2)
    assert 0.9 * bound < first.weight[:, :2].abs().max() <= bound
    assert 0.9 * bound < first.bias.abs().max() <= bound
    assert first.weight[:, 2:].abs().max() <= 1 / math.sqrt(258)
