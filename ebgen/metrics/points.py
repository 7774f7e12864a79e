"""Evaluation of low-dimensional (points) models: distributions first, then modes and the KL.

* `evaluate_points` — the report of `ebgen eval` for a points model: for the generator's samples
  and for exact samples of exp(−E) (drawn on a grid, 2-D), the MMD² ratio to the data-vs-data
  floor and precision/recall beside fresh data's (`ebgen.metrics.distribution`); for built-in
  sets also each mode's share against its weight and the VEEGAN mode metrics; the grid KL.
* `mode_metrics` — the VEEGAN protocol (Srivastava et al. 2017): how many of a mixture's modes
  the samples reach, and which share of samples lies within 3σ (Mahalanobis) of its mode.
* `mode_shares` — each mode's share of the samples over its weight in the mixture.
* `radial_profile` — how the samples spread within their modes: shares at 0–1, 1–2, 2–3 and
  beyond 3σ (Mahalanobis) beside fresh data's, so wells too sharp at the centre and
  too heavy in the tails show even where HQ % and the mode shares look right.
* `sample_energy_grid` — exact samples of p ∝ exp(−E): cells of a fine grid drawn by their
  probability, then a uniform point inside the cell.
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

from ..errors import EbgenError
from ..toy2d import TOY_SETS, ToySet
from . import distribution as dm

Box = tuple[float, float, float, float]
EnergyFn = Callable[[np.ndarray], np.ndarray]
LogDensityFn = Callable[[np.ndarray], np.ndarray]

#: Points per call of an energy or log-density function.
CHUNK = 65536
#: Energies are clipped to ±this before normalising, so inf/nan cannot leak into the KL.
_ENERGY_CLIP = 1e30


def mode_metrics(samples: np.ndarray, toy: ToySet) -> dict:
    """VEEGAN mode metrics: modes captured and the fraction of high-quality samples.

    A sample is high quality when within 3σ (Mahalanobis, in its most probable mode's own
    covariance) of that mode; a mode is captured when it is the mode of at least one
    high-quality sample. Non-finite samples count as low quality.
    """
    samples = np.asarray(samples, dtype=np.float64).reshape(-1, 2)
    if len(samples) == 0:
        return {"modes": 0, "num_modes": toy.num_modes, "high_quality": 0.0}
    idx, dist = toy.assign(samples)
    good = dist <= 3.0
    captured = np.unique(idx[good])
    return {"modes": int(len(captured)), "num_modes": toy.num_modes,
            "high_quality": float(good.mean())}


def mode_shares(samples: np.ndarray, toy: ToySet) -> dict:
    """Each mode's share of the samples (by most probable mode) over its mixture weight.

    Returns `share_ratio_min` / `share_ratio_max` (1 = every mode gets exactly its weight) and
    `share_ratios`, one per mode.
    """
    idx, _ = toy.assign(np.asarray(samples, dtype=np.float64).reshape(-1, 2))
    shares = np.bincount(idx[idx >= 0], minlength=toy.num_modes) / max(1, len(idx))
    ratios = shares / toy.weights
    return {"share_ratio_min": float(ratios.min()), "share_ratio_max": float(ratios.max()),
            "share_ratios": [round(float(r), 4) for r in ratios]}


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


def sample_energy_grid(energy_fn: EnergyFn, box: Box, n: int, resolution: int = 1000,
                       seed: int = 0) -> np.ndarray:
    """`n` exact samples (up to the grid's resolution) of p ∝ exp(−E) restricted to `box`.

    A diverged energy (all cells non-finite) gives uniform samples over the box.
    """
    xs, ys, energies = energy_grid(energy_fn, box, resolution)
    log_p = np.nan_to_num(-energies.ravel(), nan=-np.inf, posinf=-np.inf)
    p = np.exp(log_p - log_p.max()) if np.isfinite(log_p.max()) else np.ones_like(log_p)
    rng = np.random.default_rng(seed)
    i, j = np.divmod(rng.choice(len(p), size=n, p=p / p.sum()), resolution)
    dx, dy = (box[1] - box[0]) / resolution, (box[3] - box[2]) / resolution  # cell sides
    return np.stack([xs[j] + dx * (rng.random(n) - 0.5),
                     ys[i] + dy * (rng.random(n) - 0.5)], 1).astype(np.float32)


def grid_log_z(energy_fn: EnergyFn, box: Box, resolution: int = 1000) -> float:
    """log ∫ exp(−E) over `box` by the midpoint rule on a `resolution`² grid (2-D models):
    the check of an AIS estimate, exact up to the mass outside the box."""
    _, _, points = grid_points(box, resolution)
    log_f = -_apply_chunked(energy_fn, points)
    peak = float(np.max(log_f))
    cell = (box[1] - box[0]) * (box[3] - box[2]) / resolution ** 2
    return peak + math.log(float(np.exp(log_f - peak).sum()) * cell)


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


#: Repeats of the MMD (each n ≤ 2,500 samples against as many data points).
MMD_REPEATS = 5
#: Grid resolution of the exact samples of exp(−E).
SAMPLING_RESOLUTION = 1000


#: Edges of the Mahalanobis bands of `radial_profile`, in units of the mode's own std.
RADIAL_EDGES = np.array((0.0, 1.0, 2.0, 3.0, np.inf))


def _radial_shares(points: np.ndarray, toy: ToySet) -> np.ndarray:
    """Shares of `points` in the Mahalanobis bands of `RADIAL_EDGES` (non-finite: the last)."""
    _, dist = toy.assign(np.asarray(points, dtype=np.float64).reshape(-1, 2))
    counts = np.histogram(np.nan_to_num(dist, nan=np.inf), bins=RADIAL_EDGES)[0]
    return counts / max(1, len(dist))


def radial_profile(samples: np.ndarray, toy: ToySet, reference: np.ndarray | None = None
                   ) -> dict:
    """The samples' shares in Mahalanobis bands 0–1, 1–2, 2–3 and ≥ 3σ of their most probable
    mode, beside the `reference` points' (fresh data; None: a lone 2-D Gaussian mode's exact
    shares, 1 − exp(−r²/2) within r).

    `radial_tv` is the total-variation distance between the two (0 = every mode's spread is
    right, 1 = disjoint): samples twice too sharp give about 0.4, wells too sharp at the
    centre and heavy in the tails show in the first and last bands.
    """
    shares = _radial_shares(samples, toy)
    if reference is None:
        expected = np.diff(1.0 - np.exp(-0.5 * RADIAL_EDGES ** 2))
    else:
        expected = _radial_shares(reference, toy)
    return {"radial_shares": [round(float(v), 4) for v in shares],
            "radial_data": [round(float(v), 4) for v in expected],
            "radial_tv": float(0.5 * np.abs(shares - expected).sum())}


def distribution_report(samples: np.ndarray, pool: np.ndarray, seed: int = 0) -> dict:
    """MMD² ratios (global and local kernels) and precision/recall of `samples` against the
    data `pool`, beside fresh data's values."""
    mmd = dm.mmd_report(samples, pool, repeats=MMD_REPEATS, seed=seed)
    half = len(pool) // 2
    pr = dm.precision_recall_report(samples, pool[:half], pool[half:])
    keep = ("mmd2_ratio", "mmd2_local_ratio", "mmd2", "mmd2_floor", "mmd2_bandwidth",
            "mmd2_local_bandwidth", "n")
    return {**{k: mmd[k] for k in keep}, **pr}


def evaluate_points(sample_fn: Callable[[int], np.ndarray], energy_fn: EnergyFn,
                    dataset_name: str | None, data: np.ndarray | None,
                    num_samples: int = 12_500, resolution: int = 400, seed: int = 0,
                    data_label: str | None = None) -> dict:
    """The evaluation report of a points model (2-D gets the grid parts).

    For a built-in set the reference is a fresh draw of 10,000 points from it and the exact
    density; otherwise `data` (the held-out points) and, for the KL, their KDE. Reports, for
    the generator's `num_samples` samples and (2-D) as many exact samples of exp(−E):
    `generator` / `energy` sections with MMD² ratios, precision/recall and their data
    ceilings (and, for built-in sets with modes, mode shares and VEEGAN metrics); then the
    grid KL of the energy. `data_label` names the data in the report (e.g. the file).
    """
    toy = TOY_SETS.get(dataset_name) if dataset_name is not None else None
    if toy is not None:
        pool = toy.sample(10_000, np.random.default_rng([seed, 0xDA7A]))
        log_density, density = toy.log_density, "exact"
    else:
        if data is None:
            raise EbgenError(f"no data to evaluate against for data set {dataset_name!r}")
        pool = np.asarray(data, dtype=np.float64)
        if pool.ndim != 2 or len(pool) < 4:
            raise EbgenError(f"evaluation needs at least 4 held-out points (n, D), got "
                             f"{pool.shape}")
        pool = pool[np.random.default_rng([seed, 0xDA7A]).permutation(len(pool))]
        log_density, density = None, "kde"
    dim = pool.shape[1]
    report: dict = {"data": data_label or (toy.description if toy else "held-out points"),
                    "num_samples": int(num_samples), "num_reference": int(len(pool))}
    samples = np.asarray(sample_fn(num_samples), dtype=np.float64).reshape(num_samples, -1)
    views = {"generator": samples}
    box = default_box(pool) if dim == 2 else None
    if box is not None:
        views["energy"] = sample_energy_grid(energy_fn, box, num_samples,
                                                SAMPLING_RESOLUTION, seed=seed)
    for view, x in views.items():
        section = distribution_report(x, pool, seed=seed)
        if toy is not None and toy.has_modes:
            section.update(mode_shares(x, toy))
            section.update(mode_metrics(x, toy))
            section.update(radial_profile(x, toy, pool))
        report[view] = section
    if toy is not None and toy.has_modes:
        report["data_high_quality"] = mode_metrics(pool, toy)["high_quality"]
    if box is not None:
        if log_density is None:
            log_density = kde_log_density(pool)
        report["kl_data_energy"] = grid_kl(energy_fn, log_density, box, resolution)
        report["box"] = [float(v) for v in box]
        report["resolution"] = int(resolution)
    report["density"] = density
    return report
