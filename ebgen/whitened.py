"""An energy in its base's whitened coordinates, and the Metropolis-adjusted Langevin step on it.

Every `EnergyModel` is E(x) = base(x) − experts(x) with a Gaussian base (`base_whitening`:
standardised u = μ + L v makes the base ½‖v‖² + c). `WhitenedEnergy` is E as a function of v,
where the base is a standard normal, so one MALA step size suits every direction the base
knows. Annealed importance sampling (`ebgen.export.partition`) and the likelihood refit of an
energy (`ebgen.train.density`) both run their chains through `mala_step`, each chain adapting
its step size by `adapt_step_size`.
"""
from __future__ import annotations

import math

import torch

#: Target acceptance rate of the Langevin steps (optimal for MALA, Roberts & Rosenthal 1998).
TARGET_ACCEPTANCE = 0.574


class WhitenedEnergy:
    """The energy in whitened coordinates v: g(v) = E(x(v)) − the affine's log-det, and the
    base h(v) = ½‖v‖² + c, with log Z = log|L| + log ∫ exp(−g)."""

    def __init__(self, energy: torch.nn.Module) -> None:
        self.energy = energy
        mean, scale, self.offset = energy.base_whitening()
        self.mean, self.scale_t = mean.float(), scale.T.contiguous().float()
        self.log_det_scale = float(torch.linalg.slogdet(scale)[1])
        self.dim = len(mean)
        self.shape = tuple(energy.config.sample_shape)
        affine = energy.affine
        self.energy_log_det = 0.0 if affine.identity else float(affine.log_det)

    def g(self, v: torch.Tensor, grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """g(v) (float64) and, with `grad`, ∇g(v)."""
        with torch.enable_grad():
            v = v.detach().requires_grad_(grad)
            x = self.inputs(v)
            value = self.energy(x).double() - self.energy_log_det
            if not grad:
                return value.detach(), None
            (gradient,) = torch.autograd.grad(value.sum(), v)
        return value.detach(), gradient.detach()

    def inputs(self, v: torch.Tensor) -> torch.Tensor:
        """The energy's inputs x (in the data's units and shape) at whitened coordinates `v`."""
        u = self.mean + v @ self.scale_t
        return self.energy.affine.restore(u.view(len(v), *self.shape))

    def whiten(self, u: torch.Tensor) -> torch.Tensor:
        """Whitened coordinates v of standardised inputs `u` (N, ...): solves u = μ + L v (L
        diagonal for the data base, the Cholesky factor for the covariance base)."""
        centred = (u.flatten(1) - self.mean).T
        return torch.linalg.solve_triangular(self.scale_t.T, centred, upper=False).T

    def base_energy(self, u: torch.Tensor) -> torch.Tensor:
        """The base's energy ½‖v‖² + c at standardised inputs `u` (differentiable in u)."""
        return 0.5 * self.whiten(u).pow(2).sum(1) + self.offset

    def h(self, v: torch.Tensor) -> torch.Tensor:
        return 0.5 * v.double().pow(2).sum(1) + self.offset

    def log_z_base(self) -> float:
        """log ∫ exp(−h(v)) dv + log|L|: the base's own log Z in standardised units."""
        return 0.5 * self.dim * math.log(2 * math.pi) - self.offset + self.log_det_scale


def mala_step(target: WhitenedEnergy, v, g_v, grad_g, beta: float, step: torch.Tensor,
              generator: torch.Generator):
    """One Metropolis-adjusted Langevin step on E_β = (1 − β) h + β g, per chain."""
    def energy_and_grad(values, g_values, g_grads):
        e = (1 - beta) * target.h(values) + beta * g_values
        return e, (1 - beta) * values + beta * g_grads

    e, grad_e = energy_and_grad(v, g_v, grad_g)
    noise = torch.randn(v.shape, generator=generator, dtype=v.dtype)
    root = (2 * step).sqrt()[:, None]
    proposal = v - step[:, None] * grad_e + root * noise
    g_p, grad_g_p = target.g(proposal, grad=True)
    e_p, grad_e_p = energy_and_grad(proposal, g_p, grad_g_p)

    def log_q(to, frm, grad_frm):  # log density of the Langevin proposal frm → to
        return -(to - frm + step[:, None] * grad_frm).double().pow(2).sum(1) / (4 * step)

    log_accept = e - e_p + log_q(v, proposal, grad_e_p) - log_q(proposal, v, grad_e)
    uniform = torch.rand(len(v), generator=generator, dtype=torch.float64)
    accept = torch.isfinite(log_accept) & (uniform.log() < log_accept)
    keep = accept[:, None]
    return (torch.where(keep, proposal, v), torch.where(accept, g_p, g_v),
            torch.where(keep, grad_g_p, grad_g), accept)


def adapt_step_size(step: torch.Tensor, accept: torch.Tensor) -> torch.Tensor:
    """Each chain's next MALA step size: nudged towards `TARGET_ACCEPTANCE` by its last move."""
    return step * torch.exp(0.05 * (accept.double() - TARGET_ACCEPTANCE)).float()
