"""Latent-space MALA (Kumar et al. 2019), the sampler behind `TorchModel.refine`.

The chain targets the latent prior reweighted by exp(−E(G(z))). It always runs on a standard
normal variable u: a normal latent is u itself, a uniform one is z = 2Φ(u) − 1 (Φ the normal
CDF), which carries N(0, 1) onto U(−1, 1) exactly. So the potential is
U(u) = E(G(z(u))) + ‖u‖²/2 for both, and no proposal ever leaves a uniform latent's cube: a
random walk inside the cube itself would refuse most of its moves in 100 dimensions, where
some coordinate nearly always sits within a step of a face.

- `to_normal(z, latent)` / `from_normal(u, latent)`: the change of variables;
- `mala(u, potential, steps, step_size, generator)`: the Metropolis-adjusted Langevin chain on
  any potential returning (U, ∇U) per row; returns the last states and the mean acceptance.
"""
from __future__ import annotations

from typing import Callable

import torch

#: How close to the cube's faces a uniform latent is taken before the normal quantile (float64).
_EDGE = 1e-12

Potential = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def to_normal(z: torch.Tensor, latent: str) -> torch.Tensor:
    """The standard normal variable behind latents z (n, z_dim) of distribution `latent`."""
    if latent == "normal":
        return z
    p = ((z.double() + 1.0) / 2.0).clamp(_EDGE, 1.0 - _EDGE)
    return torch.special.ndtri(p).to(z.dtype)


def from_normal(u: torch.Tensor, latent: str) -> torch.Tensor:
    """Latents of distribution `latent` from standard normal u (differentiable)."""
    if latent == "normal":
        return u
    return 2.0 * torch.special.ndtr(u) - 1.0


def mala(u: torch.Tensor, potential: Potential, steps: int, step_size: float,
         generator: torch.Generator, progress: Callable[[], None] | None = None
         ) -> tuple[torch.Tensor, float]:
    """`steps` Metropolis-adjusted Langevin moves of each row of u on `potential`.

    Each proposal is u − s²/2 ∇U(u) + s ξ (ξ ~ N(0, I), drawn from the CPU `generator`), accepted
    with the Metropolis–Hastings ratio of the two Langevin densities, so the chain leaves
    exp(−U) invariant for any step size s. `progress` is called after each move. Returns
    (last states, mean acceptance rate).
    """
    energy, grad = potential(u)
    accepted = 0.0
    half = 0.5 * step_size ** 2
    for _ in range(steps):
        noise = torch.randn(u.shape, generator=generator).to(u.device)
        proposal = u - half * grad + step_size * noise
        energy_new, grad_new = potential(proposal)
        forward = (proposal - u + half * grad).pow(2).sum(1)
        backward = (u - proposal + half * grad_new).pow(2).sum(1)
        log_alpha = energy - energy_new + (forward - backward) / (2 * step_size ** 2)
        uniform = torch.rand(len(u), generator=generator).to(u.device)
        accept = torch.log(uniform) < log_alpha
        u = torch.where(accept[:, None], proposal, u)
        energy = torch.where(accept, energy_new, energy)
        grad = torch.where(accept[:, None], grad_new, grad)
        accepted += float(accept.float().mean()) / steps
        if progress is not None:
            progress()
    return u, accepted
