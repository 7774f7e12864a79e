"""An energy of several independently trained members: their mean, one model to the user.

`EnergyEnsemble` holds `energy_members` `EnergyModel`s of one config, each initialised from its
own draw, and is itself an energy: E(x) = (1/K) Σ_k E_k(x), the normalised geometric mean of
the members' densities (a product of experts). Averaging K energies fitted to the same data
from different starts cancels part of each one's own error (deep ensembles, Lakshminarayanan
et al. 2017), which is what moves an anomaly score's ranking from seed to seed.

Training keeps the members independent: with `split=True` the rows of a batch are K equal
chunks and chunk k is scored by member k alone, so ∇ₓ of the summed energies holds each
member's own input gradient and every per-row term (score matching, R1) trains each member
as if it were alone (`train/energy_terms.py` repeats its rows K times). The generator is
trained against the mean, so its samples follow the ensemble's density.

Everything else sees one `EnergyModel`: `affine`, `input_scale`, `fit_base`, `config` and
`base_whitening` (the mean of the members' Gaussian bases is one Gaussian, what AIS needs).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .config import ModelConfig
from .models import EnergyModel


class EnergyEnsemble(nn.Module):
    """E(x) = mean of K `EnergyModel` members' energies (K = `config.energy_members`)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        member_config = dataclasses.replace(config, energy_members=1)
        self.members = nn.ModuleList(EnergyModel(member_config)
                                     for _ in range(config.energy_members))

    @property
    def num_members(self) -> int:
        return len(self.members)

    @property
    def affine(self):
        """The input standardisation, one config for every member."""
        return self.members[0].affine

    @property
    def input_scale(self) -> torch.Tensor | float:
        return self.members[0].input_scale

    def fit_base(self, x: torch.Tensor) -> None:
        """Fit every member's data or covariance base to training samples `x`."""
        for member in self.members:
            member.fit_base(x)

    def switch_fourier(self, on: bool) -> None:
        for member in self.members:
            member.switch_fourier(on)

    @torch.no_grad()
    def base_gradient(self, u: torch.Tensor, split: bool = False) -> torch.Tensor:
        """∇ᵤ of the members' mean fixed base at `u`; with `split`, chunk k by member k's base
        alone (as `forward(split=True)` scores it)."""
        if split:
            return torch.cat([member.base_gradient(chunk) for member, chunk
                              in zip(self.members, u.chunk(self.num_members))])
        return torch.stack([member.base_gradient(u) for member in self.members]).mean(0)

    @torch.no_grad()
    def base_whitening(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(μ, L, c) of the mean of the members' Gaussian bases, itself a Gaussian: with
        precisions P_k = (L_k L_kᵀ)⁻¹ the mean base is ½ uᵀ P̄ u − bᵀu + const, P̄ the mean
        precision, b the mean of P_k μ_k (see `EnergyModel.base_whitening`)."""
        precision = bias = constant = 0.0
        for member in self.members:
            mean, scale, offset = member.base_whitening()
            p = torch.cholesky_inverse(scale)  # (L Lᵀ)⁻¹
            precision = precision + p / self.num_members
            bias = bias + p @ mean / self.num_members
            constant += float(0.5 * mean @ p @ mean + offset) / self.num_members
        covariance = torch.linalg.inv(precision)
        mean = covariance @ bias
        return mean, torch.linalg.cholesky(covariance), constant - float(0.5 * mean @ bias)

    def forward(self, x: torch.Tensor, split: bool = False) -> torch.Tensor:
        """The mean energy of every row; with `split`, rows in K equal chunks, chunk k scored
        by member k alone (training: each member's own gradients)."""
        if split:
            chunks = x.chunk(self.num_members)
            if len(chunks) != self.num_members or len({len(c) for c in chunks}) != 1:
                raise ValueError(f"split=True needs rows in {self.num_members} equal chunks, "
                                 f"got {len(x)} rows")
            return torch.cat([member(chunk) for member, chunk in zip(self.members, chunks)])
        return torch.stack([member(x) for member in self.members]).mean(0)


def num_members(energy: nn.Module) -> int:
    """How many members an energy net averages (1 for a plain `EnergyModel`)."""
    return getattr(energy, "num_members", 1)
