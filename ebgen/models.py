"""The two networks of Kim & Bengio (2016): `EnergyModel` E(x) and `Generator` G(z).

Images are float tensors `x` (N, C, H, W) in [-1, 1]; points are `x` (N, D) in the data's own
units (the nets inside work on standardised coordinates, `InputAffine`). Image nets are
DCGAN-like convolutional stacks (8, 16, 28, 32 and 64 px, grey or RGB); point nets are MLPs.
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


def _base_size(image_size: int) -> int:
    """Spatial size of the smallest feature map: 7 for 28 px (28 → 14 → 7), else 4."""
    return 7 if image_size == 28 else 4


def _num_resamples(image_size: int) -> int:
    """How many stride-2 steps separate the image from the base feature map."""
    return int(round(math.log2(image_size // _base_size(image_size))))


class HiddenNoise(nn.Module):
    """Adds N(0, std²) noise in training mode (keeps the batch-norm entropy estimate honest)."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.training and self.std > 0:
            return h + self.std * torch.randn_like(h)
        return h


class InputAffine(nn.Module):
    """The points models' standardisation: u = (x − shift) / scale, per dimension.

    The nets of a points model work on u, while every input and output of the model is in the
    data's own units x. `log_det` = Σ log scale is the change of variables: the energy in x
    units is E(u) + log_det, so p(x) = p(u) / Π scale and two scalings of the same data get the
    same density. Identity (shift 0, scale 1) for images and unstandardised models. Non-persistent
    buffers: the values come from the config, so weights files keep their keys.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        dim = config.data_dim if config.kind == "points" else 1
        shift = config.data_shift if config.kind == "points" and config.data_shift else [0.0] * dim
        scale = config.data_scale if config.kind == "points" and config.data_scale else [1.0] * dim
        self.register_buffer("shift", torch.tensor(shift, dtype=torch.float32), persistent=False)
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32), persistent=False)
        self.log_det = float(torch.log(torch.tensor(scale, dtype=torch.float64)).sum())
        self.identity = all(v == 0.0 for v in shift) and all(v == 1.0 for v in scale)

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.identity else (x - self.shift) / self.scale

    def restore(self, u: torch.Tensor) -> torch.Tensor:
        return u if self.identity else u * self.scale + self.shift


class LatentComponents(nn.Module):
    """Weighted components of the latent: z's first coordinate picks one of `num_components`.

    Its quantile u ∈ [0, 1) (uniform latents: (z₁ + 1) / 2; normal: Φ(z₁)) selects the component
    whose slice of [0, 1) holds u — slices as wide as the components' weights π (equal at the
    start) — and that component's learned offset is added to the generator's first hidden
    layer. G is continuous within a component and free to jump between them, so its samples can
    cover disconnected modes without a bridge of samples between them, and a mode's share is
    the weight of the components on it: `reweight` moves the weights toward the energy's
    shares. The latent itself, and so the one latent sampler, are unchanged.
    """

    def __init__(self, num_components: int, width: int, latent: str) -> None:
        super().__init__()
        self.num_components = num_components
        self.normal = latent == "normal"
        self.offsets = nn.Parameter(torch.randn(num_components, width))
        self.register_buffer("log_weights", torch.zeros(num_components))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Checkpoints from before the weights were learned have none: equal weights.
        state_dict.setdefault(prefix + "log_weights", torch.zeros(self.num_components))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def weights(self) -> torch.Tensor:
        """π, the components' weights (sum 1)."""
        return torch.softmax(self.log_weights.float(), 0)

    def index(self, z: torch.Tensor) -> torch.Tensor:
        """Each latent's component, as int64 of shape (N,)."""
        first = z[:, 0]
        u = 0.5 * (1.0 + torch.erf(first / math.sqrt(2.0))) if self.normal else 0.5 * (first + 1.0)
        edges = torch.cumsum(self.weights(), 0)[:-1]  # where each slice ends (the last at 1)
        return (u.unsqueeze(1) >= edges.unsqueeze(0)).long().sum(1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.offsets[self.index(z)]

    @torch.no_grad()
    def reweight(self, index: torch.Tensor, log_ratio: torch.Tensor, rate: float,
                 floor: float = 0.1) -> None:
        """Move the weights toward the energy's: log πₖ −= rate · (Dₖ − D̄).

        `log_ratio` is each sample's E(x) + log q(x) (q the generator's density, e.g. kNN) and
        `index` its component. For components on disjoint supports Dₖ = log πₖ + E_qₖ[E + log qₖ],
        so the fixed point, where every Dₖ is equal, is πₖ ∝ exp(−(E_qₖ[E] − H(qₖ))): each
        component's share of exp(−E)'s mass, which is KL(q‖p_E)'s minimiser over π. The batch
        gives Dₖ − D̄ unbiased per component (a component's samples are divided by its expected
        count), deviations clipped at ±4 nats. No weight falls below `floor`/K, so a component
        keeps drawing samples and can recover.
        """
        weights = self.weights()
        deviation = (log_ratio.float() - log_ratio.float().mean()).clamp(-4.0, 4.0)
        total = torch.zeros_like(weights).index_add_(0, index, deviation)
        step = rate * total / (len(index) * weights)
        log_weights = torch.log_softmax(self.log_weights.float() - step, 0)
        log_weights = log_weights.clamp_min(math.log(floor / self.num_components))
        self.log_weights.copy_(torch.log_softmax(log_weights, 0))


class SmoothLeakyReLU(nn.Module):
    """0.2·h + 0.8·softplus(h): LeakyReLU(0.2)'s two slopes, joined smoothly around 0, so an
    energy built of it can have rounded (locally quadratic) wells instead of cones."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return 0.2 * h + 0.8 * F.softplus(h)


_ENERGY_ACTIVATIONS = {"leaky_relu": lambda: nn.LeakyReLU(0.2), "silu": nn.SiLU,
                       "smooth_leaky_relu": SmoothLeakyReLU}


class EnergyModel(nn.Module):
    """E(x), the energy: p(x) ∝ exp(-E(x)), so **lower energy means more probable**.

    E(x) = ‖x‖² / (2σ²) − bᵀx − Σ_i softplus(w_iᵀ f(x) + c_i): a Gaussian prior with learnable
    scale σ and bias b, plus a product of softplus experts over deep features f (a strided
    conv net for images, an MLP for points); with `quadratic_experts` also
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
        act = _ENERGY_ACTIVATIONS[config.energy_activation]
        if config.kind == "points":
            layers: list[nn.Module] = []
            size_in = config.data_dim
            for _ in range(config.depth):
                layers += [nn.Linear(size_in, width), act()]
                size_in = width
            self.features = nn.Sequential(*layers)
            feature_dim = width
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
    pass through tanh into [-1, 1]; point outputs are unbounded. Points generators with
    `num_components` add a `LatentComponents` offset to the first hidden layer.
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
            if config.num_components:
                self.components = LatentComponents(config.num_components, width, config.latent)
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
        self.affine = InputAffine(config)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.config.num_components:
            hidden = self.net[0](z) + self.components(z)
            return self.affine.restore(self.net[1:](hidden)).float()
        return self.affine.restore(self.net(z)).float()

    def batch_norms(self) -> list[nn.modules.batchnorm._BatchNorm]:
        """Every batch-norm layer, in order (their scales γ give the entropy estimate)."""
        return [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def build_models(config: ModelConfig) -> tuple[EnergyModel, Generator]:
    """A fresh (energy, generator) pair for `config`."""
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
