"""The two networks of Kim & Bengio (2016): `EnergyModel` E(x) and `Generator` G(z).

Images are float tensors `x` (N, C, H, W) in [-1, 1]; points are `x` (N, D) in the data's own
units (the nets inside work on standardised coordinates, `ebgen.layers.InputAffine`). Image
nets are DCGAN-like convolutional stacks (8, 16, 28, 32 and 64 px, grey or RGB); point nets
are MLPs, built from the blocks in `ebgen.layers`.
`build_models(config)` makes both from a `ModelConfig`, which is all a checkpoint needs;
`generator_function` and `energy_function` wrap them as numpy functions (export parity,
evaluation, the trainer's plots).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .config import ModelConfig
from .latents import sample_latents
from .layers import (ENERGY_ACTIVATION_LAYERS, FourierFeatures, HiddenNoise, InputAffine,
                     LatentComponents)


def _base_size(image_size: int) -> int:
    """Spatial size of the smallest feature map: 7 for 28 px (28 → 14 → 7), else 4."""
    return 7 if image_size == 28 else 4


def _num_resamples(image_size: int) -> int:
    """How many stride-2 steps separate the image from the base feature map."""
    return int(round(math.log2(image_size // _base_size(image_size))))


class EnergyModel(nn.Module):
    """E(x), the energy: p(x) ∝ exp(-E(x)), so **lower energy means more probable**.

    E(x) = ‖x‖² / (2σ²) − bᵀx − Σ_i softplus(w_iᵀ f(x) + c_i): a Gaussian prior with learnable
    scale σ and bias b, plus a product of softplus experts over deep features f (a strided
    conv net for images, an MLP for points, optionally over random Fourier features of the
    input, `fourier_features`, whose sines make smooth bowls); with `quadratic_experts` also
    + ½ Σ_j (u_jᵀ f(x) + d_j)², which makes piecewise-linear features draw bowls, not cones.
    With `base="data"` the prior is instead
    ½ Σ_d (x_d − μ_d)² / v_d, the training data's per-dimension mean μ and variance v (floored),
    fixed by `fit_base` before training: dimensions the data never varies in (an image's
    border) then cost energy to change, which the experts alone never learn, since neither
    the data nor the generator's samples ever go there. There is no batch norm, so each
    sample's energy depends on that sample alone. Returns `energy` of shape (N,).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        width = config.energy_width
        act = ENERGY_ACTIVATION_LAYERS[config.energy_activation]
        if config.kind == "points":
            layers: list[nn.Module] = []
            size_in = config.data_dim
            if config.fourier_features:
                layers.append(FourierFeatures(size_in, config.fourier_features,
                                              config.fourier_max_frequency))
                size_in = layers[0].out_dim
            for _ in range(config.depth):
                layers += [nn.Linear(size_in, width), act()]
                size_in = width
            self.features = nn.Sequential(*layers)
            feature_dim = width
            if config.fourier_features:  # the input's columns start as they would without
                with torch.no_grad():  # the features (PyTorch scales by 1/√fan-in)
                    first, fourier = self.features[1], self.features[0]
                    gain = math.sqrt(fourier.out_dim / fourier.in_dim)
                    first.weight[:, :fourier.in_dim].mul_(gain)
                    first.bias.mul_(gain)
        else:
            layers = []
            channels_in, channels = config.channels, width
            for _ in range(_num_resamples(config.image_size)):
                layers += [nn.Conv2d(channels_in, channels, 4, 2, 1), act()]
                channels_in, channels = channels, channels * 2
            layers.append(nn.Flatten())
            self.features = nn.Sequential(*layers)
            feature_dim = channels_in * _base_size(config.image_size) ** 2
        input_dim = math.prod(config.sample_shape)
        if config.base == "data":
            self.register_buffer("base_mean", torch.zeros(input_dim))
            self.register_buffer("base_precision", torch.ones(input_dim))
        elif config.base == "covariance":
            self.register_buffer("base_mean", torch.zeros(input_dim))
            self.register_buffer("base_precision", torch.eye(input_dim))
        else:
            self.log_sigma = nn.Parameter(torch.zeros(()))
            self.bias = nn.Parameter(torch.zeros(input_dim))
        self.experts = nn.Linear(feature_dim, config.num_experts)
        if config.quadratic_experts:
            self.quadratic = nn.Linear(feature_dim, config.quadratic_experts)
            with torch.no_grad():  # starts near zero: the bowls grow as training needs them
                self.quadratic.weight.mul_(0.1)
                self.quadratic.bias.zero_()
        self.affine = InputAffine(config)

    @property
    def input_scale(self) -> torch.Tensor | float:
        """Per-dimension data scale (1.0 when there is none): ∇ᵤE = input_scale · ∇ₓE for the
        standardised input u."""
        return 1.0 if self.affine.identity else self.affine.scale

    @torch.no_grad()
    def fit_base(self, x: torch.Tensor) -> None:
        """Set the "data" base to the mean and (floored) variance of training samples `x`, or
        the "covariance" base to their mean and inverse covariance (eigenvalues floored)."""
        flat = self.affine.standardise(x).flatten(1).double()
        self.base_mean.copy_(flat.mean(0))
        floor = self.config.base_min_variance
        if self.config.base == "covariance":
            centred = flat - flat.mean(0)
            values, vectors = torch.linalg.eigh(centred.T @ centred / len(flat))
            self.base_precision.copy_((vectors / values.clamp_min(floor)) @ vectors.T)
        else:
            self.base_precision.copy_(1.0 / flat.var(0, unbiased=False).clamp_min(floor))

    @torch.no_grad()
    def base_gradient(self, u: torch.Tensor) -> torch.Tensor:
        """∇ᵤ of the fixed data or covariance base term at standardised inputs `u` (the shape of
        u): what R1 leaves out under `gradient_penalty_on="experts"`."""
        centred = u.flatten(1) - self.base_mean
        if self.config.base == "data":
            return (centred * self.base_precision).view_as(u)
        if self.config.base == "covariance":
            return (centred @ self.base_precision).view_as(u)
        raise ValueError("the gaussian base is learned: it has no fixed gradient to leave out")

    @torch.no_grad()
    def base_whitening(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(μ, L, c) with the base energy of standardised u = μ + L v equal to ½‖v‖² + c:
        the base is the Gaussian N(μ, L Lᵀ) (float64; L lower triangular, (D, D)). What
        annealed importance sampling starts from (`ebgen.export.partition`)."""
        if self.config.base == "data":
            return (self.base_mean.double(), torch.diag(self.base_precision.double().rsqrt()),
                    0.0)
        if self.config.base == "covariance":
            covariance = torch.linalg.inv(self.base_precision.double())
            return self.base_mean.double(), torch.linalg.cholesky(covariance), 0.0
        variance = torch.exp(2 * self.log_sigma.double())  # ‖u‖²/2σ² − bᵀu, completed
        bias = self.bias.double()
        scale = torch.eye(len(bias), dtype=torch.float64) * variance.sqrt()
        return variance * bias, scale, float(-0.5 * variance * bias.pow(2).sum())

    def fourier(self) -> FourierFeatures | None:
        """The Fourier features layer (None without `fourier_features`)."""
        first = self.features[0]
        return first if isinstance(first, FourierFeatures) else None

    @torch.no_grad()
    def switch_fourier(self, on: bool) -> None:
        """Fourier features on or off. Off, their gain and the weights reading them are 0 and
        stay 0 under training (no gradient, nothing to decay), so switching them on later
        leaves E unchanged: they join from zero."""
        fourier = self.fourier()
        if fourier is not None and bool(fourier.gain) != on:
            fourier.gain.fill_(float(on))
            if not on:
                self.features[1].weight[:, fourier.in_dim:].zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.affine.standardise(x)
        flat = x.flatten(1)
        if self.config.base == "data":
            prior = 0.5 * ((flat - self.base_mean).pow(2) * self.base_precision).sum(1)
        elif self.config.base == "covariance":
            centred = flat - self.base_mean
            prior = 0.5 * ((centred @ self.base_precision) * centred).sum(1)
        else:
            prior = (flat.pow(2).sum(1) * (0.5 * torch.exp(-2 * self.log_sigma))
                     - flat @ self.bias)
        features = self.features(x)
        energy = prior - F.softplus(self.experts(features)).sum(1)
        if self.config.quadratic_experts:
            energy = energy + 0.5 * self.quadratic(features).pow(2).sum(1)
        return (energy if self.affine.identity else energy + self.affine.log_det).float()


class Generator(nn.Module):
    """G(z): a directed net from latents `z` (N, z_dim) to samples `x`.

    Batch norm follows every hidden layer (its scales give the entropy estimate) and, in
    training mode, N(0, noise_std²) is added to each normalised pre-activation. Image outputs
    pass through tanh into [-1, 1]; point outputs are unbounded. With `num_components` a
    `LatentComponents` offset joins the first hidden layer (for images, the linear layer's
    output before its batch norm).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        width, noise = config.generator_width, config.noise_std
        if config.kind == "points":
            layers: list[nn.Module] = []
            size_in = config.z_dim
            for _ in range(config.depth):
                layers += [nn.Linear(size_in, width), nn.BatchNorm1d(width), HiddenNoise(noise),
                           nn.ReLU()]
                size_in = width
            layers.append(nn.Linear(size_in, config.data_dim))
            self.net = nn.Sequential(*layers)
        else:
            base, steps = _base_size(config.image_size), _num_resamples(config.image_size)
            channels = width * 2 ** (steps - 1)
            layers = [nn.Linear(config.z_dim, channels * base * base, bias=False),
                      nn.BatchNorm1d(channels * base * base), HiddenNoise(noise), nn.ReLU(),
                      nn.Unflatten(1, (channels, base, base))]
            for _ in range(steps - 1):
                layers += [nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1, bias=False),
                           nn.BatchNorm2d(channels // 2), HiddenNoise(noise), nn.ReLU()]
                channels //= 2
            layers += [nn.ConvTranspose2d(channels, config.channels, 4, 2, 1), nn.Tanh()]
            self.net = nn.Sequential(*layers)
        if config.num_components:  # an offset on the first (linear) layer's output
            self.components = LatentComponents(config.num_components,
                                               self.net[0].out_features, config.latent)
        self.affine = InputAffine(config)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.config.num_components:
            hidden = self.net[0](z) + self.components(z)
            return self.affine.restore(self.net[1:](hidden)).float()
        return self.affine.restore(self.net(z)).float()

    def batch_norms(self) -> list[nn.modules.batchnorm._BatchNorm]:
        """Every batch-norm layer, in order (their scales γ give the entropy estimate)."""
        return [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def build_models(config: ModelConfig) -> tuple[nn.Module, Generator]:
    """A fresh (energy, generator) pair for `config`: the energy an `EnergyModel`, or with
    `energy_members` > 1 an `EnergyEnsemble` of them."""
    if config.energy_members > 1:
        from .ensemble import EnergyEnsemble
        return EnergyEnsemble(config), Generator(config)
    return EnergyModel(config), Generator(config)


# ------------------------------------------------------------------ numpy views of the nets

def generator_function(generator: torch.nn.Module, z_dim: int, distribution: str,
                       device: torch.device, seed: int = 0, batch: int = 4096):
    """Wrap a generator (eval mode) as `sample(n) -> np.ndarray`, latents seeded by `seed`."""
    def sample(n: int) -> np.ndarray:
        z = sample_latents(n, z_dim, seed=seed, distribution=distribution)
        with torch.no_grad():
            parts = [generator(torch.from_numpy(z[i:i + batch]).to(device)).float().cpu()
                     for i in range(0, n, batch)]
        return torch.cat(parts).numpy()
    return sample


def energy_function(energy: torch.nn.Module, device: torch.device | str = "cpu",
                    batch: int = 4096):
    """Wrap an energy net as `fn(x: np.ndarray (n, ...)) -> np.ndarray (n,)`, chunked, no grad."""
    def fn(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        with torch.no_grad():
            parts = [energy(torch.from_numpy(x[i:i + batch]).to(device)).float().cpu()
                     for i in range(0, len(x), batch)]
        return torch.cat(parts).numpy() if parts else np.zeros(0, np.float32)
    return fn
