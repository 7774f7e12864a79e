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
