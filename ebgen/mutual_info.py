"""The mutual-information entropy estimator of Kumar et al. (2019), `--entropy mi`.

For a deterministic generator, H(G(z)) = I(G(z); z) up to a constant, so the generator's
entropy can be raised by raising the mutual information between its inputs and outputs. A
statistics network T(x, z) learns to tell matched pairs (G(z), z) from shuffled ones
(G(z), z'); the Jensen–Shannon estimator (Hjelm et al. 2019, Deep InfoMax)
    I_JSD = E_joint[−softplus(−T)] − E_shuffled[softplus(T)] + 2 log 2
is maximised by T and by G; it lies in [0, 2 log 2] (0: independent, 2 log 2: T separates
every matched pair from every shuffled one). It replaces the batch-norm estimate in the generator loss.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .config import ModelConfig
from .layers import InputAffine


class StatisticsNetwork(nn.Module):
    """T(x, z): an MLP on the flattened sample concatenated with its latent."""

    def __init__(self, config: ModelConfig, width: int | None = None, depth: int = 2) -> None:
        super().__init__()
        width = width or max(64, config.energy_width)
        size_in = math.prod(config.sample_shape) + config.z_dim
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Linear(size_in, width), nn.LeakyReLU(0.2)]
            size_in = width
        layers.append(nn.Linear(size_in, 1))
        self.net = nn.Sequential(*layers)
        self.affine = InputAffine(config)  # points: T sees standardised samples

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x = self.affine.standardise(x)
        return self.net(torch.cat([x.flatten(1), z.flatten(1)], dim=1)).squeeze(1).float()


def jsd_mutual_information(statistics: nn.Module, x: torch.Tensor, z: torch.Tensor
                           ) -> torch.Tensor:
    """The JSD estimate of I(x; z) from matched rows and a random pairing (a scalar, nats)."""
    shuffled = z[torch.randperm(len(z), device=z.device)]
    scores = statistics(torch.cat([x, x]), torch.cat([z, shuffled]))
    joint, marginal = scores[:len(x)], scores[len(x):]
    return -F.softplus(-joint).mean() - F.softplus(marginal).mean() + 2 * math.log(2)
