"""The built-in 2-D data sets, generated in code, with their true densities.

`8gaussians` (a ring of 8 modes), `25gaussians` (a 5×5 grid) and `swissroll` use the scalings of
the WGAN-GP toy experiments (Gulrajani et al. 2017), so figures compare with the literature.
Each set knows its mode centres and per-mode standard deviation (for the VEEGAN mode-coverage
metrics) and its exact log-density (for the grid KL of the energy).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ToySet:
    """A Gaussian mixture in 2-D: equal-weight modes at `centers`, isotropic std `std`."""

    name: str
    centers: np.ndarray  # (K, 2) float64
    std: float
    #: Whether the modes are separate clusters (mode-coverage metrics apply) or a continuum.
    has_modes: bool = True

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw `n` points as float32 (n, 2)."""
        idx = rng.integers(0, len(self.centers), size=n)
        return (self.centers[idx] + self.std * rng.standard_normal((n, 2))).astype(np.float32)

    def log_density(self, points: np.ndarray) -> np.ndarray:
        """Exact log p(x) of the mixture at `points` (n, 2), in nats, chunked to bound memory."""
        points = np.asarray(points, dtype=np.float64)
        out = np.empty(len(points))
        log_norm = -math.log(2 * math.pi * self.std ** 2) - math.log(len(self.centers))
        for start in range(0, len(points), 4096):
            chunk = points[start:start + 4096]
            sq = ((chunk ** 2).sum(1)[:, None] - 2 * chunk @ self.centers.T
                  + (self.centers ** 2).sum(1)[None, :])
            a = -sq / (2 * self.std ** 2)
            peak = a.max(axis=1, keepdims=True)
            out[start:start + 4096] = (peak[:, 0] + np.log(np.exp(a - peak).sum(axis=1))
                                       + log_norm)
        return out


def _ring() -> ToySet:
    angles = np.arange(8) * (2 * math.pi / 8)
    centers = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    scale = 1.414
    return ToySet("8gaussians", centers / scale, 0.02 / scale)


def _grid() -> ToySet:
    centers = np.array([(2.0 * i, 2.0 * j) for i in range(-2, 3) for j in range(-2, 3)])
    scale = 2.828
    return ToySet("25gaussians", centers / scale, 0.05 / scale)


def _swissroll() -> ToySet:
    # sklearn's make_swiss_roll(noise=0.25) projected on (x, z) and scaled by 1/7.5; the roll is
    # uniform in t on [1.5π, 4.5π], so a dense mixture along the curve is its density.
    t = 1.5 * math.pi * (1 + 2 * (np.arange(2000) + 0.5) / 2000)
    centers = np.stack([t * np.cos(t), t * np.sin(t)], axis=1)
    scale = 7.5
    return ToySet("swissroll", centers / scale, 0.25 / scale, has_modes=False)


TOY_SETS: dict[str, ToySet] = {s.name: s for s in (_ring(), _grid(), _swissroll())}


def get_toy_set(name: str) -> ToySet:
    """The built-in 2-D set called `name`; raises KeyError naming the known ones."""
    try:
        return TOY_SETS[name]
    except KeyError:
        raise KeyError(f"unknown 2-D data set {name!r}; known: {', '.join(TOY_SETS)}") from None
