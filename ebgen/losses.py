"""The batch-norm entropy estimate and the training losses.

DDGM (Kim & Bengio 2016), per minibatch, generator step then energy step:
  L_G = mean E(G(z)) − H(G)                  (KL(p_G ‖ p_E) up to log Z)
  L_E = mean E(x_data) − mean E(G(z))        (max-likelihood gradient, negative phase from G)
H(G) treats each batch-normalised pre-activation as Gaussian with std |γ|:
  H ≈ Σ ½ log(2πe γ²), summed over every batch-norm scale of the generator.
The `gan` objective trains the same nets as a non-saturating GAN with logit = −E(x).
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from .models import Generator

#: Keeps log γ² finite when a scale collapses to zero.
_EPS = 1e-8


def gaussian_entropy(std: torch.Tensor) -> torch.Tensor:
    """Differential entropy ½ log(2πe σ²) of N(·, σ²), elementwise, in nats."""
    return 0.5 * torch.log(2 * math.pi * math.e * (std.float() ** 2 + _EPS))


def batchnorm_entropy(generator: Generator) -> torch.Tensor:
    """H(G) ≈ Σ over all batch-norm scales γ of ½ log(2πe γ²) (a scalar tensor, in nats)."""
    terms = [gaussian_entropy(bn.weight).sum() for bn in generator.batch_norms()]
    return torch.stack(terms).sum()


def knn_entropy(x: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Kozachenko–Leonenko nearest-neighbour estimate of H from a batch of samples (nats).

    H ≈ ψ(n) − ψ(k) + log V_d + (d/n) Σᵢ log ρᵢ, with ρᵢ the distance from sample i to its k-th
    nearest neighbour in the batch and V_d the volume of the unit d-ball. Differentiable in x:
    its gradient pushes each sample away from its neighbours, at the scale of the samples'
    spread, so the generator's spread settles where the energy's pull balances it. Suited to
    low-dimensional outputs (2-D points); in pixel space prefer `bn` or `mi`.
    """
    flat = x.flatten(1).float()
    n, d = flat.shape
    if not 1 <= k < n:
        raise ValueError(f"need 1 <= k < batch size, got k={k}, batch {n}")
    sq = flat.pow(2).sum(1)
    dist2 = (sq[:, None] + sq[None, :] - 2 * flat @ flat.T).clamp_min(1e-24)
    dist2 = dist2 + torch.eye(n, device=x.device) * dist2.max().detach() * 4  # not yourself
    kth = dist2.topk(k, dim=1, largest=False).values[:, -1]
    harmonic = lambda m: sum(1.0 / i for i in range(1, m))  # ψ(m) + γ
    log_unit_ball = 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1)
    return harmonic(n) - harmonic(k) + log_unit_ball + 0.5 * d * torch.log(kth).mean()


def energy_loss(energy_data: torch.Tensor, energy_samples: torch.Tensor) -> torch.Tensor:
    """DDGM energy loss: push data energy down and sample energy up."""
    return energy_data.mean() - energy_samples.mean()


def generator_loss(energy_samples: torch.Tensor, entropy: torch.Tensor,
                   entropy_weight: float = 1.0) -> torch.Tensor:
    """DDGM generator loss: low-energy samples, high entropy."""
    return energy_samples.mean() - entropy_weight * entropy


def gan_discriminator_loss(energy_data: torch.Tensor, energy_samples: torch.Tensor
                           ) -> torch.Tensor:
    """GAN loss of the energy as a discriminator with logit −E: real → low E, fake → high E."""
    return F.softplus(energy_data).mean() + F.softplus(-energy_samples).mean()


def gan_generator_loss(energy_samples: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN generator loss: −log σ(−E(G(z)))."""
    return F.softplus(energy_samples).mean()


def gradient_penalty(energy_data: torch.Tensor, inputs: torch.Tensor, num_data: int
                     ) -> torch.Tensor:
    """R1, zero-centred: ½ mean ‖∇ₓ E(x)‖² over the first `num_data` rows of `inputs` (the data).

    `inputs` must require grad and `energy_data` must be E of those rows; the penalty is
    differentiable (double backward), so it shapes the energy around the data.
    """
    (grad,) = torch.autograd.grad(energy_data.sum(), inputs, create_graph=True)
    return 0.5 * grad[:num_data].flatten(1).pow(2).sum(1).mean()
