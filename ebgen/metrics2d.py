"""Evaluation metrics for 2-D energy models: mode coverage and the grid KL of the energy.

* `mode_metrics` — the VEEGAN protocol (Srivastava et al. 2017): how many of a mixture's modes
  the samples reach, and which share of samples lies within 3σ of its nearest mode.
* `grid_kl` — KL(p_data ‖ p_E) in nats with both densities discretised on one grid of cell
  centres, where p_E ∝ exp(−E). Stable in float64 log-space, so a diverged energy gives a large
  finite number instead of inf/nan.
* `kde_log_density` — a Gaussian KDE used as p_data for user data without a known density.

Boxes are `(x_min, x_max, y_min, y_max)`. Energy functions map float32 points (n, 2) to an
array (n,). Numpy only; no torch here.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .errors import EbgenError
from .toy2d import TOY_SETS

Box = tuple[float, float, float, float]
EnergyFn = Callable[[np.ndarray], np.ndarray]
LogDensityFn = Callable[[np.ndarray], np.ndarray]

#: Points per call of an energy or log-density function.
CHUNK = 65536
#: Energies are clipped to ±this before normalising, so inf/nan cannot leak into the KL.
_ENERGY_CLIP = 1e30


def _nearest(samples: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of and distance to the nearest centre for each sample, chunked."""
    idx = np.empty(len(samples), dtype=np.int64)
    dist = np.empty(len(samples))
    for start in range(0, len(samples), 4096):
        chunk = samples[start:start + 4096]
        sq = ((chunk[:, None, :] - centers[None, :, :]) ** 2).sum(-1)
        j = sq.argmin(axis=1)
        idx[start:start + 4096] = j
        dist[start:start + 4096] = np.sqrt(sq[np.arange(len(chunk)), j])
    return idx, dist


def mode_metrics(samples: np.ndarray, centers: np.ndarray, std: float) -> dict:
    """VEEGAN mode metrics: modes captured and the fraction of high-quality samples.

    A sample is high quality when within 3·std of its nearest mode; a mode is captured when it
    is the nearest mode of at least one high-quality sample. Non-finite samples count as low
    quality.
    """
    samples = np.asarray(samples, dtype=np.float64).reshape(-1, 2)
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 2)
    n = len(samples)
    if n == 0:
        return {"modes": 0, "num_modes": len(centers), "high_quality": 0.0}
    finite = np.isfinite(samples).all(axis=1)
    idx, dist = _nearest(np.where(finite[:, None], samples, 0.0), centers)
    good = finite & (dist <= 3.0 * std)
    captured = np.unique(idx[good])
    return {"modes": int(len(captured)), "num_modes": int(len(centers)),
            "high_quality": float(good.mean())}


def grid_points(box: Box, resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cell centres of a `resolution`² grid on `box`: xs, ys (res,) and points (res², 2) float32.

    Points are in row-major order of (y, x), so `values.reshape(res, res)[i, j]` is at
    (xs[j], ys[i]).
    """
    x0, x1, y0, y1 = (float(v) for v in box)
    xs = x0 + (x1 - x0) * (np.arange(resolution) + 0.5) / resolution
    ys = y0 + (y1 - y0) * (np.arange(resolution) + 0.5) / resolution
    gx, gy = np.meshgrid(xs, ys)
    points = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
    return xs, ys, points


def _apply_chunked(fn: Callable[[np.ndarray], np.ndarray], points: np.ndarray) -> np.ndarray:
    out = np.empty(len(points))
    for start in range(0, len(points), CHUNK):
        chunk = points[start:start + CHUNK]
        out[start:start + CHUNK] = np.asarray(fn(chunk), dtype=np.float64).reshape(len(chunk))
    return out


def energy_grid(energy_fn: EnergyFn, box: Box,
                resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The energy on the cell centres of a grid: xs, ys (res,) and E (res, res), E[i, j] at
    (xs[j], ys[i]); `energy_fn` is called on at most `CHUNK` points at a time."""
    xs, ys, points = grid_points(box, resolution)
    return xs, ys, _apply_chunked(energy_fn, points).reshape(resolution, resolution)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """Stable float64 log-softmax over all entries; nan/±inf become ∓huge finite values."""
    a = np.nan_to_num(np.asarray(logits, dtype=np.float64).ravel(),
                      nan=-_ENERGY_CLIP, posinf=_ENERGY_CLIP, neginf=-_ENERGY_CLIP)
    a = np.clip(a, -_ENERGY_CLIP, _ENERGY_CLIP)
    peak = a.max()
    return a - (peak + math.log(np.exp(a - peak).sum()))


def grid_kl(energy_fn: EnergyFn, log_density_fn: LogDensityFn, box: Box,
            resolution: int = 400) -> float:
    """KL(p_data ‖ p_E) in nats, both densities normalised on the same grid of cell centres.

    Finite for any energy, however large or diverged (non-finite energies count as +huge).
    """
    _, _, points = grid_points(box, resolution)
    log_q = _log_softmax(-_apply_chunked(energy_fn, points))
    log_p = _log_softmax(_apply_chunked(log_density_fn, points))
    p = np.exp(log_p)
    mask = p > 0
    return float(max(0.0, (p[mask] * (log_p[mask] - log_q[mask])).sum()))


def kde_log_density(data: np.ndarray, bandwidth: float | None = None,
                    max_points: int = 5000, seed: int = 0) -> LogDensityFn:
    """A Gaussian KDE of 2-D `data` as a log-density function of points (n, 2).

    `bandwidth` is the isotropic kernel std in data units; None uses Scott's rule on the data
    covariance (kernel covariance n^(-1/3)·Σ in 2-D, as scipy's gaussian_kde). Data are
    subsampled to `max_points` for speed.
    """
    data = np.asarray(data, dtype=np.float64).reshape(len(data), -1)
    data = data[np.isfinite(data).all(axis=1)]
    if len(data) == 0:
        raise EbgenError("cannot build a density estimate from an empty data set")
    if len(data) > max_points:
        data = data[np.random.default_rng(seed).choice(len(data), max_points, replace=False)]
    n, d = data.shape
    if bandwidth is None:
        cov = np.atleast_2d(np.cov(data, rowvar=False)) if n > 1 else np.eye(d)
        cov = cov * n ** (-2.0 / (d + 4)) + 1e-12 * np.eye(d)
    else:
        cov = float(bandwidth) ** 2 * np.eye(d)
    chol = np.linalg.cholesky(cov)
    inv = np.linalg.inv(chol)
    white = data @ inv.T
    white_sq = 0.5 * (white ** 2).sum(1)
    log_norm = (-0.5 * d * math.log(2 * math.pi) - np.log(np.diag(chol)).sum() - math.log(n))

    def log_density(points: np.ndarray) -> np.ndarray:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, d) @ inv.T
        out = np.empty(len(pts))
        step = max(1, 4_000_000 // n)
        for start in range(0, len(pts), step):
            chunk = pts[start:start + step]
            # -|x - y|²/2 = x·y - |y|²/2 - |x|²/2, via one matrix product.
            a = chunk @ white.T - white_sq[None, :]
            peak = a.max(axis=1, keepdims=True)
            np.subtract(a, peak, out=a)
            np.exp(a, out=a)
            out[start:start + step] = (peak[:, 0] + np.log(a.sum(axis=1))
                                       - 0.5 * (chunk ** 2).sum(1))
        return out + log_norm

    return log_density


def default_box(data: np.ndarray, margin: float = 0.25) -> Box:
    """The bounding square of finite `data`, widened by `margin` × side on each side."""
    data = np.asarray(data, dtype=np.float64).reshape(-1, 2)
    data = data[np.isfinite(data).all(axis=1)]
    if len(data) == 0:
        return (-1.0, 1.0, -1.0, 1.0)
    lo, hi = data.min(axis=0), data.max(axis=0)
    centre = (lo + hi) / 2
    side = float((hi - lo).max()) or 1.0
    half = side * (0.5 + margin)
    return (float(centre[0] - half), float(centre[0] + half),
            float(centre[1] - half), float(centre[1] + half))


def evaluate_points(sample_fn: Callable[[int], np.ndarray], energy_fn: EnergyFn,
                    dataset_name: str | None, data: np.ndarray | None,
                    num_samples: int = 2500, resolution: int = 400) -> dict:
    """The evaluation report of a 2-D model.

    For a built-in set: VEEGAN mode metrics on `sample_fn(num_samples)` (sets with modes) and
    the grid KL against the exact density. Otherwise the grid KL against a KDE of `data`.
    """
    report: dict = {"num_samples": int(num_samples), "resolution": int(resolution)}
    if dataset_name in TOY_SETS:
        toy = TOY_SETS[dataset_name]
        box = default_box(toy.sample(20000, np.random.default_rng(0)))
        if toy.has_modes:
            samples = np.asarray(sample_fn(num_samples), dtype=np.float64).reshape(-1, 2)
            report.update(mode_metrics(samples, toy.centers, toy.std))
        log_density, density = toy.log_density, "exact"
    else:
        if data is None:
            raise EbgenError(f"no data to evaluate against for data set {dataset_name!r}")
        data = np.asarray(data, dtype=np.float64)
        if data.ndim != 2 or data.shape[1] != 2:
            raise EbgenError(f"2-D evaluation needs points of shape (n, 2), got {data.shape}")
        box = default_box(data)
        log_density, density = kde_log_density(data), "kde"
    report["kl_data_energy"] = grid_kl(energy_fn, log_density, box, resolution)
    report["box"] = [float(v) for v in box]
    report["density"] = density
    return report
