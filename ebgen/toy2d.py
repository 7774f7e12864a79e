"""The built-in 2-D data sets, generated in code, with their true densities.

Every set is a Gaussian mixture (weights, centres, per-mode covariances), optionally bent by an
area-preserving swirl (each point rotated by `swirl`·|x| radians) and then placed in the plane by
`x ↦ shift + scale·x`. So every set knows its exact log-density (the grid KL, the exact-sample
MMD floor), and every set with separate clusters knows which mode a point belongs to (mode
coverage, HQ share and each mode's share of the samples).

* `8gaussians` (a ring of 8 modes), `25gaussians` (a 5×5 grid) and `swissroll` use the scalings
  of the WGAN-GP toy experiments (Gulrajani et al. 2017), so figures compare with the literature.
* `unequal`: 6 modes on a hexagon with weights 30/25/18/12/10/5 %.
* `anisotropic`: 5 elongated modes in as many orientations (std ratio 6:1).
* `pinwheel`: 5 radial arms bent by a swirl (Johnson et al. 2016), a curved multi-armed set.
* `spirals`: two interleaved spirals (a continuum, no separate modes).
* `moons`: two interleaved half circles (a continuum).
* `faraway`: 4 anisotropic modes of unequal weight (one 5 %) centred at (1000, −500), some 400
  units across: data in a user's own units.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: Points per chunk of the density and assignment computations (bounds memory).
_CHUNK = 4096


def _rotation(angle: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 2, 2) for `angle` (...) in radians."""
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


def _swirled(points: np.ndarray, rate: float) -> np.ndarray:
    """Each point rotated by `rate`·|x| radians (|x| is kept, so the map is area-preserving)."""
    if rate == 0.0:
        return points
    angle = rate * np.sqrt((points ** 2).sum(1))
    return np.einsum("nij,nj->ni", _rotation(angle), points)


@dataclass(frozen=True)
class ToySet:
    """A 2-D Gaussian mixture: modes at `centers` with covariances `covariances` and `weights`,
    swirled by `swirl`, then mapped by shift + scale·x. `std` is the isotropic per-mode std in
    the set's own units when every mode is isotropic and alike (None otherwise)."""

    name: str
    centers: np.ndarray       # (K, 2) float64, before swirl and placement
    covariances: np.ndarray   # (K, 2, 2)
    weights: np.ndarray       # (K,), sums to 1
    #: Whether the modes are separate clusters (mode-coverage metrics apply) or a continuum.
    has_modes: bool = True
    swirl: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)
    scale: float = 1.0
    description: str = ""
    std: float | None = field(default=None)

    # --------------------------------------------------------------------------- building
    @classmethod
    def isotropic(cls, name: str, centers: np.ndarray, std: float, **kw) -> "ToySet":
        """Equal-weight modes of one isotropic std."""
        centers = np.asarray(centers, dtype=np.float64)
        k = len(centers)
        return cls(name, centers, np.tile(std ** 2 * np.eye(2), (k, 1, 1)), np.full(k, 1.0 / k),
                   std=float(std), **kw)

    @property
    def num_modes(self) -> int:
        return len(self.centers)

    # --------------------------------------------------------------------------- sampling
    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw `n` points as float32 (n, 2), in the set's own units."""
        k = self.num_modes
        if self.std is not None:  # equal isotropic modes (the draws the WGAN-GP sets always made)
            idx = rng.integers(0, k, size=n)
            x = self.centers[idx] + self.std * rng.standard_normal((n, 2))
        else:
            idx = rng.choice(k, size=n, p=self.weights)
            chol = np.linalg.cholesky(self.covariances)
            x = self.centers[idx] + np.einsum("nij,nj->ni", chol[idx],
                                               rng.standard_normal((n, 2)))
        x = _swirled(x, self.swirl)
        return (np.asarray(self.shift) + self.scale * x).astype(np.float32)

    # ---------------------------------------------------------------------------- density
    def _base_points(self, points: np.ndarray) -> np.ndarray:
        """Points (in the set's units) mapped back to the mixture's own frame."""
        base = (np.asarray(points, dtype=np.float64).reshape(-1, 2) - np.asarray(self.shift)) \
            / self.scale
        return _swirled(base, -self.swirl)

    def _component_log_densities(self, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log(wₖ·N(x; μₖ, Σₖ)) (n, K) and the Mahalanobis distances (n, K), in the base frame."""
        inv = np.linalg.inv(self.covariances)
        _, logdet = np.linalg.slogdet(self.covariances)
        diff = base[:, None, :] - self.centers[None, :, :]
        maha_sq = np.einsum("nki,kij,nkj->nk", diff, inv, diff)
        log_comp = (np.log(self.weights) - math.log(2 * math.pi) - 0.5 * logdet)[None, :] \
            - 0.5 * maha_sq
        return log_comp, np.sqrt(np.maximum(maha_sq, 0.0))

    def log_density(self, points: np.ndarray) -> np.ndarray:
        """Exact log p(x) at `points` (n, 2) in the set's units, in nats, chunked."""
        base = self._base_points(points)
        out = np.empty(len(base))
        log_jacobian = -2.0 * math.log(self.scale)  # the swirl preserves area
        for start in range(0, len(base), _CHUNK):
            log_comp, _ = self._component_log_densities(base[start:start + _CHUNK])
            peak = log_comp.max(axis=1, keepdims=True)
            out[start:start + _CHUNK] = (peak[:, 0] + np.log(np.exp(log_comp - peak).sum(1))
                                         + log_jacobian)
        return out

    def assign(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each point, its most probable mode and the Mahalanobis distance to that mode
        (in units of the mode's own std; 3 means "3σ away"). Non-finite points get mode −1."""
        base = self._base_points(points)
        finite = np.isfinite(base).all(axis=1)
        base = np.where(finite[:, None], base, 0.0)
        idx = np.empty(len(base), dtype=np.int64)
        dist = np.empty(len(base))
        for start in range(0, len(base), _CHUNK):
            log_comp, maha = self._component_log_densities(base[start:start + _CHUNK])
            j = log_comp.argmax(axis=1)
            idx[start:start + _CHUNK] = j
            dist[start:start + _CHUNK] = maha[np.arange(len(j)), j]
        idx[~finite] = -1
        dist[~finite] = np.inf
        return idx, dist


def _ring() -> ToySet:
    angles = np.arange(8) * (2 * math.pi / 8)
    centers = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    scale = 1.414
    return ToySet.isotropic("8gaussians", centers / scale, 0.02 / scale,
                            description="8 Gaussians on a ring")


def _grid() -> ToySet:
    centers = np.array([(2.0 * i, 2.0 * j) for i in range(-2, 3) for j in range(-2, 3)])
    scale = 2.828
    return ToySet.isotropic("25gaussians", centers / scale, 0.05 / scale,
                            description="25 Gaussians on a 5×5 grid")


def _curve(name: str, points: np.ndarray, std: float, description: str) -> ToySet:
    """A continuum: a dense equal-weight mixture along a curve (points spaced evenly)."""
    return ToySet.isotropic(name, points, std, has_modes=False, description=description)


def _swissroll() -> ToySet:
    # sklearn's make_swiss_roll(noise=0.25) projected on (x, z) and scaled by 1/7.5; the roll is
    # uniform in t on [1.5π, 4.5π], so a dense mixture along the curve is its density.
    t = 1.5 * math.pi * (1 + 2 * (np.arange(2000) + 0.5) / 2000)
    centers = np.stack([t * np.cos(t), t * np.sin(t)], axis=1)
    return _curve("swissroll", centers / 7.5, 0.25 / 7.5, "a swiss roll")


def _spirals() -> ToySet:
    t = math.sqrt(1 / 3) * np.sqrt(np.linspace(0.0025, 1.0, 1000)) * 3 * math.pi  # even arc
    arm = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (3 * math.pi)
    return _curve("spirals", np.concatenate([arm, -arm]) * 1.6, 0.04,
                  "two interleaved spirals")


def _moons() -> ToySet:
    t = math.pi * (np.arange(1000) + 0.5) / 1000
    upper = np.stack([np.cos(t), np.sin(t)], axis=1)
    lower = np.stack([1 - np.cos(t), 0.5 - np.sin(t)], axis=1)
    centers = (np.concatenate([upper, lower]) - [0.5, 0.25]) * 1.2
    return _curve("moons", centers, 0.06, "two interleaved half circles")


def _unequal() -> ToySet:
    angles = np.arange(6) * (2 * math.pi / 6)
    centers = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    weights = np.array([0.30, 0.25, 0.18, 0.12, 0.10, 0.05])
    return ToySet("unequal", centers, np.tile(0.06 ** 2 * np.eye(2), (6, 1, 1)), weights,
                  description="6 modes of weights 30/25/18/12/10/5 %")


def _elongated(centers: np.ndarray, angles: np.ndarray, stds: tuple[float, float]
               ) -> np.ndarray:
    """Covariances R(θ) diag(stds²) R(θ)ᵀ, one per angle."""
    rot = _rotation(np.asarray(angles, dtype=np.float64))
    return rot @ np.diag(np.square(stds)) @ np.swapaxes(rot, -1, -2)


def _anisotropic() -> ToySet:
    angles = np.arange(5) * (2 * math.pi / 5) + 0.3
    centers = 1.1 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    covs = _elongated(centers, angles * 2.0, (0.24, 0.04))
    return ToySet("anisotropic", centers, covs, np.full(5, 0.2),
                  description="5 elongated modes in 5 orientations")


def _pinwheel() -> ToySet:
    angles = np.arange(5) * (2 * math.pi / 5)
    centers = 0.9 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    covs = _elongated(centers, angles, (0.3, 0.05))
    return ToySet("pinwheel", centers, covs, np.full(5, 0.2), swirl=1.2,
                  description="5 curved arms (a pinwheel)")


def _faraway() -> ToySet:
    centers = np.array([[-1.0, 0.6], [0.9, 0.9], [0.2, -1.0], [1.5, -0.3]])
    covs = _elongated(centers, np.array([0.2, 1.2, 2.4, 0.7]), (0.35, 0.08))
    weights = np.array([0.40, 0.30, 0.25, 0.05])
    return ToySet("faraway", centers, covs, weights, shift=(1000.0, -500.0), scale=100.0,
                  description="4 anisotropic modes of unequal weight, centred at "
                              "(1000, −500), scale 100")


TOY_SETS: dict[str, ToySet] = {s.name: s for s in (
    _ring(), _grid(), _swissroll(), _unequal(), _anisotropic(), _pinwheel(), _spirals(),
    _moons(), _faraway())}


def get_toy_set(name: str) -> ToySet:
    """The built-in 2-D set called `name`; raises KeyError naming the known ones."""
    try:
        return TOY_SETS[name]
    except KeyError:
        raise KeyError(f"unknown 2-D data set {name!r}; known: {', '.join(TOY_SETS)}") from None
