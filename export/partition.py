"""log Z of an energy: annealed importance sampling from the energy's own Gaussian base.

Every `EnergyModel` is E(x) = base(x) − experts(x) with a Gaussian base whose normaliser is
known (`EnergyModel.base_whitening`: standardised u = μ + L v makes the base ½‖v‖² + c). AIS
(Neal 2001) anneals from the base to exp(−E) along E_β = (1 − β)·base + β·E, β rising from 0 to
1 on a sigmoid schedule (Grosse et al. 2015), with one Metropolis-adjusted Langevin step per
temperature in the whitened coordinates v (each chain adapts its step size towards 57 %
acceptance). Forward AIS gives a stochastic lower bound on log Z (E log Ẑ ≤ log Z) and its
standard error across chains; reverse AIS, run back to the base from the forward chains' final
states resampled by their weights (approximate samples of exp(−E): a chain stuck off the modes
has a negligible weight and is dropped), gives an estimate from above to the extent those are
samples of exp(−E) (bidirectional Monte Carlo, Grosse et al. 2016): the gap shows the error.
log Z is the same in the data's units and in standardised ones (the energy carries the change
of variables), so `log_density = −E − log Z` is a density in the data's own units.

    estimate = log_partition(energy)     # 128 chains × 5,000 temperatures, each way
    estimate.log_z, estimate.standard_error, estimate.log_z_reverse
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from ..whitened import WhitenedEnergy, adapt_step_size, mala_step


@dataclass
class PartitionEstimate:
    """What `log_partition` found; `to_dict` is model.json's `log_partition` entry."""

    log_z: float                 # forward AIS: a stochastic lower bound
    standard_error: float        # of log_z, across chains (delta method)
    log_z_reverse: float | None  # reverse AIS from the forward chains' ends
    chains: int
    temperatures: int
    acceptance: float            # mean Langevin acceptance rate, forward
    seconds: float
    method: str = ("AIS from the energy's Gaussian base, one MALA step per temperature, "
                   "sigmoid schedule; reverse AIS from the forward chains' final states "
                   "resampled by weight")

    def to_dict(self) -> dict:
        return asdict(self)


def sigmoid_schedule(temperatures: int, sharpness: float = 4.0) -> torch.Tensor:
    """β_0 = 0 < … < β_T = 1, dense at both ends (float64)."""
    t = torch.linspace(-sharpness, sharpness, temperatures + 1, dtype=torch.float64)
    s = torch.sigmoid(t)
    return (s - s[0]) / (s[-1] - s[0])


def _anneal(target: WhitenedEnergy, v: torch.Tensor, betas: torch.Tensor,
            step: torch.Tensor, generator: torch.Generator,
            progress: Callable[[int], None] | None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Run chains from `v` through `betas` (in order); (log weights, end states, step sizes,
    mean acceptance). Weight increments are log f_β(t)(v) − log f_β(t−1)(v) before each step."""
    log_w = torch.zeros(len(v), dtype=torch.float64)
    g_v, grad_g = target.g(v, grad=True)
    accepted = 0.0
    for t in range(1, len(betas)):
        log_w += (betas[t] - betas[t - 1]).item() * (target.h(v) - g_v)
        v, g_v, grad_g, accept = mala_step(target, v, g_v, grad_g, betas[t].item(), step,
                                            generator)
        step = adapt_step_size(step, accept)
        accepted += float(accept.double().mean())
        if progress is not None:
            progress(1)
    return log_w, v, step, accepted / max(1, len(betas) - 1)


def _log_mean_exp(log_w: torch.Tensor) -> tuple[float, float]:
    """log mean exp(log_w) and its standard error (delta method)."""
    peak = log_w.max()
    w = torch.exp(log_w - peak)
    mean = w.mean()
    se = float(w.std(unbiased=True) / (math.sqrt(len(w)) * mean)) if len(w) > 1 else math.inf
    return float(peak + mean.log()), se


@torch.no_grad()
def log_partition(energy: torch.nn.Module, chains: int = 128, temperatures: int = 5000,
                  seed: int = 0, reverse: bool = True,
                  progress: Callable[[int], None] | None = None) -> PartitionEstimate:
    """Estimate log Z = log ∫ exp(−E(x)) dx of an `EnergyModel` (eval mode, on the CPU).

    `chains` independent AIS chains over `temperatures` steps (and as many back with
    `reverse`); `progress(n)` is called after each step.
    """
    started = time.perf_counter()
    energy = energy.eval()
    target = WhitenedEnergy(energy)
    generator = torch.Generator().manual_seed(seed)
    betas = sigmoid_schedule(temperatures)
    v = torch.randn(chains, target.dim, generator=generator)
    step = torch.full((chains,), 0.5 / math.sqrt(target.dim))
    log_w, v, step, acceptance = _anneal(target, v, betas, step, generator, progress)
    log_ratio, se = _log_mean_exp(log_w)
    log_z_reverse = None
    if reverse:  # from the end states resampled by weight (approximate samples of exp(−E)),
        # log f_β(t−1) − log f_β(t) along the reversed schedule: E[w] = Z_base / Z
        keep = torch.multinomial(torch.softmax(log_w, 0), chains, replacement=True,
                                 generator=generator)
        log_w_back, _, _, _ = _anneal(target, v[keep], betas.flip(0), step[keep], generator,
                                      progress)
        log_z_reverse = target.log_z_base() - _log_mean_exp(log_w_back)[0]
    return PartitionEstimate(target.log_z_base() + log_ratio, se, log_z_reverse, chains,
                             temperatures, acceptance, time.perf_counter() - started)


@dataclass
class QuadratureEstimate:
    """What `quadrature_log_partition` found; `to_dict` is model.json's `log_partition` entry
    for 2-D models (with the AIS figures beside it under "ais")."""

    log_z: float                 # the finest grid's midpoint rule
    error: float                 # |finest − the grid of half its resolution|
    resolution: int              # of the finest grid, per side
    box: list[float]             # where the finest grid lies, whitened coordinates
    mass_outside: float          # the coarse grid's share of exp(−E) outside `box`
    seconds: float
    method: str = ("midpoint rule on a grid in the base's whitened coordinates, over the box "
                   "holding the mass a coarse grid finds, doubled in resolution until two "
                   "agree")

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def quadrature_log_partition(energy: torch.nn.Module, tolerance: float = 0.005,
                             coarse_half: float = 12.0, coarse_resolution: int = 600,
                             max_resolution: int = 3200) -> QuadratureEstimate:
    """log Z of a 2-D `EnergyModel` by the midpoint rule: exact up to the grid's spacing and
    the mass outside its box, and blind to how rugged E is, where AIS chains get trapped.

    A coarse grid over ±`coarse_half` whitened units (the base has unit variance there) finds
    where exp(−E) holds its mass; grids over that box, padded by two coarse cells, double
    their resolution from 400 until two successive estimates agree within `tolerance` nats.
    """
    from ebgen.metrics.points import energy_grid, grid_log_z

    started = time.perf_counter()
    target = WhitenedEnergy(energy.eval())
    if target.dim != 2:
        raise ValueError(f"quadrature needs a 2-D energy, got {target.dim} dimensions")
    g = lambda v: target.g(torch.from_numpy(v), grad=False)[0].numpy()
    coarse = (-coarse_half, coarse_half, -coarse_half, coarse_half)
    xs, ys, energies = energy_grid(g, coarse, coarse_resolution)
    log_f = np.nan_to_num(-energies, nan=-np.inf)
    mass = np.exp(log_f - log_f.max())
    mass /= mass.sum()
    rows, cols = np.nonzero(mass > 1e-12)
    cell = 2 * coarse_half / coarse_resolution
    box = [xs[cols.min()] - 2.5 * cell, xs[cols.max()] + 2.5 * cell,
           ys[rows.min()] - 2.5 * cell, ys[rows.max()] + 2.5 * cell]
    inside = (xs[None, :] >= box[0]) & (xs[None, :] <= box[1]) \
        & (ys[:, None] >= box[2]) & (ys[:, None] <= box[3])
    mass_outside = float(mass[~inside].sum())
    resolution, previous = 400, None
    while True:
        estimate = grid_log_z(g, tuple(box), resolution)
        if previous is not None and (abs(estimate - previous) < tolerance
                                     or resolution >= max_resolution):
            break
        previous, resolution = estimate, resolution * 2
    return QuadratureEstimate(target.log_det_scale + estimate, abs(estimate - previous),
                              resolution, [float(b) for b in box], mass_outside,
                              time.perf_counter() - started)
