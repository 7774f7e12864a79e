"""The latent potential of refinement in PyTorch: U(u) = E(G(z(u))) + ‖u‖²/2.

`ebgen.refine` runs latent-space MALA on the standard normal variable u behind the latents;
this module is the one definition of its potential on the networks: `TorchModel.refine` takes
its value and gradient by autograd, and `ebgen export` writes it, with its gradient, to
`latent_potential.onnx` (`ebgen.export.potential_export`), which onnxruntime runs without torch.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def from_normal(u: torch.Tensor, latent: str) -> torch.Tensor:
    """Latents of distribution `latent` from standard normal u, differentiably (the torch twin
    of `ebgen.refine.from_normal`, inside the potential)."""
    if latent == "normal":
        return u
    return 2.0 * torch.special.ndtr(u) - 1.0


class LatentPotential(nn.Module):
    """U(u) per row of u (n, z_dim): the energy of the generator's sample of the latent behind
    u, plus u's standard normal potential. Both networks are used as they are (eval mode)."""

    def __init__(self, energy: nn.Module, generator: nn.Module, latent: str) -> None:
        super().__init__()
        self.energy, self.generator, self.latent = energy, generator, latent

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.energy(self.generator(from_normal(u, self.latent))) + 0.5 * u.pow(2).sum(1)

    def value_and_grad(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(U(u), ∇U(u)) as numpy float32 for numpy u (n, z_dim): `ebgen.refine`'s potential."""
        device = next(self.parameters()).device
        u_t = torch.as_tensor(np.asarray(u, dtype=np.float32), device=device).requires_grad_(True)
        value = self(u_t)
        grad, = torch.autograd.grad(value.sum(), u_t)
        return value.detach().cpu().numpy(), grad.cpu().numpy()
