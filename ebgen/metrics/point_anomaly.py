"""Anomaly scoring of feature vectors (points of any dimension D), numpy only.

What `ebgen eval --anomaly` reports for a points model: the AUROC of an anomaly score (the
energy: higher = more anomalous) between clean held-out points and corrupted copies of them,
beside a Gaussian baseline (the Mahalanobis distance under the training data's mean and
covariance), the detector an energy model has to beat on any tabular data.

- `POINT_CORRUPTIONS`: name → `fn(x, reference, rng)`:
  `uniform` (points drawn uniformly in the data's bounding box, widened by 10 % a side),
  `shuffled` (each column permuted on its own: every marginal kept, the dependence between
  columns broken; D ≥ 2 only) and `noisy` (each point moved by Gaussian noise of half the
  data's per-column standard deviation);
- `GaussianBaseline`: `fit(train)`, `score(x)` (squared Mahalanobis distance, ridge 1e-6·tr/D);
- `point_anomaly_report(score_fn, train, heldout)`: JSON-ready AUROCs of both.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import EbgenError
from .anomaly import auroc

#: Maps float32 points (N, D) to (N,) anomaly scores, higher = more anomalous.
PointScore = Callable[[np.ndarray], np.ndarray]
#: How far the `uniform` corruption's box reaches past the data on each side (× its extent).
BOX_MARGIN = 0.1
#: The `noisy` corruption's noise, in units of each column's standard deviation.
NOISE_SCALE = 0.5


def _uniform(x: np.ndarray, reference: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    lo, hi = reference.min(0), reference.max(0)
    pad = BOX_MARGIN * (hi - lo)
    return rng.uniform(lo - pad, hi + pad, size=x.shape)


def _shuffled(x: np.ndarray, reference: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.stack([rng.permutation(column) for column in x.T], axis=1)


def _noisy(x: np.ndarray, reference: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return x + rng.normal(size=x.shape) * (NOISE_SCALE * reference.std(0))


POINT_CORRUPTIONS: dict[str, Callable[[np.ndarray, np.ndarray, np.random.Generator],
                                      np.ndarray]] = {
    "uniform": _uniform, "shuffled": _shuffled, "noisy": _noisy}


def _points(x: Any, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2 or not np.all(np.isfinite(x)):
        raise EbgenError(f"{what} must be a finite (N, D) array with N ≥ 2, got shape "
                         f"{x.shape}")
    return x


class GaussianBaseline:
    """The squared Mahalanobis distance under a Gaussian fitted to the training points."""

    def __init__(self) -> None:
        self.mean: np.ndarray | None = None
        self.precision: np.ndarray | None = None

    def fit(self, x: Any) -> "GaussianBaseline":
        """Fit the mean and the (ridge-regularised) covariance of training points (N, D)."""
        x = _points(x, "Gaussian baseline training data")
        self.mean = x.mean(0)
        cov = np.atleast_2d(np.cov(x, rowvar=False))
        ridge = 1e-6 * max(float(np.trace(cov)) / len(cov), 1e-12)
        self.precision = np.linalg.inv(cov + ridge * np.eye(len(cov)))
        return self

    def score(self, x: Any) -> np.ndarray:
        """(x − μ)ᵀ Σ⁻¹ (x − μ) per point, float64 (N,)."""
        if self.mean is None or self.precision is None:
            raise EbgenError("Gaussian baseline is not fitted: call fit() before score()")
        x = _points(x, "Gaussian baseline input")
        if x.shape[1] != len(self.mean):
            raise EbgenError(f"Gaussian baseline input has {x.shape[1]} columns, fitted "
                             f"on {len(self.mean)}")
        centred = x - self.mean
        return np.einsum("ij,jk,ik->i", centred, self.precision, centred)


def point_anomaly_report(score_fn: PointScore, train: Any, heldout: Any, seed: int = 0,
                         max_heldout: int = 5000) -> dict[str, Any]:
    """AUROC of `score_fn` and of the Gaussian baseline on each corruption of held-out points.

    The clean held-out points (at most `max_heldout`, a seeded subset) are the normals, their
    corrupted copies the anomalies; the baseline and the corruptions' scales are fitted on
    `train`. `shuffled` is left out for 1-D data. Deterministic given `seed`.
    """
    train, heldout = _points(train, "training points"), _points(heldout, "held-out points")
    streams = np.random.SeedSequence(seed).spawn(1 + len(POINT_CORRUPTIONS))
    if len(heldout) > max_heldout:
        pick = np.random.default_rng(streams[0]).permutation(len(heldout))[:max_heldout]
        heldout = heldout[np.sort(pick)]
    baseline = GaussianBaseline().fit(train)
    scorers = {"energy": lambda x: np.asarray(score_fn(x.astype(np.float32)), np.float64),
               "gaussian": baseline.score}
    normal = {name: scorer(heldout) for name, scorer in scorers.items()}
    report: dict[str, Any] = {name: {} for name in scorers}
    for stream, (name, corrupt) in zip(streams[1:], POINT_CORRUPTIONS.items()):
        if name == "shuffled" and heldout.shape[1] < 2:
            continue
        corrupted = corrupt(heldout, train, np.random.default_rng(stream))
        for method, scorer in scorers.items():
            report[method][name] = auroc(normal[method], scorer(corrupted))
    report.update(num_heldout=len(heldout), seed=seed)
    return report
