"""The nets' building blocks: hidden noise, the points models' input standardisation, the
latent's weighted components, and the energy's own pieces (its activations, random Fourier
features). `ebgen.models` puts them together into `EnergyModel` and `Generator`.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .config import ModelConfig


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


class FourierFeatures(nn.Module):
    """[u, g·sin(Ωu), g·cos(Ωu)]: the input beside K fixed random Fourier features (Tancik et
    al. 2020), frequencies ‖ωₖ‖ log-uniform in [1, max_frequency] along random directions.

    The gain g (a saved buffer, 1 unless the Trainer holds it at 0 until --fourier-from, else
    --calibrate-from) lets the features join mid-run, from zero, once the calibration terms
    shape the wells (README, issue 13 step 5); `EnergyModel.switch_fourier`.
    """

    def __init__(self, dim: int, count: int, max_frequency: float) -> None:
        super().__init__()
        rng = torch.Generator().manual_seed(0)
        directions = F.normalize(torch.randn(count, dim, generator=rng), dim=1)
        magnitudes = max_frequency ** torch.rand(count, 1, generator=rng)
        self.register_buffer("frequencies", directions * magnitudes)
        self.register_buffer("gain", torch.ones(()))
        self.in_dim, self.out_dim = dim, dim + 2 * count

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        angles = u @ self.frequencies.T
        return torch.cat([u, self.gain * torch.sin(angles), self.gain * torch.cos(angles)], 1)


#: `ModelConfig.energy_activation` → the layer's constructor.
ENERGY_ACTIVATION_LAYERS = {"leaky_relu": lambda: nn.LeakyReLU(0.2), "silu": nn.SiLU,
                            "smooth_leaky_relu": SmoothLeakyReLU}
