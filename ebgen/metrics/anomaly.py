"""Anomaly scoring with an energy: corruptions, AUROC/AUPRC, a PCA baseline and two reports.

Images are float32 numpy arrays (N, C, H, W) in [-1, 1], background -1 (MNIST). An anomaly
score is any function of a batch that returns one number per sample, higher = more anomalous;
an energy E(x) is one (lower energy = more probable).

- `CORRUPTIONS`: name → `fn(x, rng)`, the corrupted copies that `anomaly_report` scores
  against the clean digits (uniform noise, Gaussian blur, inverted, shifted by 8 pixels).
- `auroc`, `auprc`: rank-based area under the ROC curve and average precision.
- `PCABaseline`: squared reconstruction error from the top principal components, the baseline
  to beat.
- `anomaly_report`: energy vs PCA AUROC on each corruption of held-out digits.
- `heldout_class_report`: the protocol of Kumar et al. 2019, where a model trained without
  one class must score that class's held-out digits as anomalies.

numpy only (no torch): `ebgen.models.energy_function` turns an energy net into a score function.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from ..errors import EbgenError
from ..pixels import PIXEL_RANGE

#: Maps a float32 batch (N, C, H, W) to (N,) anomaly scores, higher = more anomalous.
ScoreFunction = Callable[[np.ndarray], np.ndarray]
#: Maps (images, rng) to a corrupted copy of the same shape and dtype.
Corruption = Callable[[np.ndarray, np.random.Generator], np.ndarray]

#: The background pixel value (black in MNIST); blur pads with it, shifts fill with it.
BACKGROUND = PIXEL_RANGE[0]
#: Standard deviation of the `blur` corruption, in pixels.
BLUR_SIGMA = 1.5
#: Distance the `shifted` corruption moves each image, in pixels.
SHIFT_PIXELS = 8


def _checked(values: Any, what: str, ndim: int, dtype: type, unit: str) -> np.ndarray:
    """`values` as a non-empty, finite `ndim`-D array, or an EbgenError saying what is wrong."""
    values = np.asarray(values, dtype=dtype)
    if values.ndim != ndim:
        shape = "images (N, C, H, W)" if ndim == 4 else "a vector of scores"
        raise EbgenError(f"{what} must be {shape}, got shape {values.shape}")
    if len(values) == 0:
        raise EbgenError(f"{what} is empty: expected at least one {unit}")
    if not np.isfinite(values).all():
        raise EbgenError(f"{what} holds NaN or infinite {unit} values")
    return values


def _check_images(x: Any, what: str) -> np.ndarray:
    """`x` as a float32 (N, C, H, W) array, or an EbgenError."""
    return _checked(x, what, 4, np.float32, "image")


def _check_scores(scores: Any, what: str) -> np.ndarray:
    """`scores` as a non-empty, finite float64 vector, or an EbgenError."""
    return _checked(scores, what, 1, np.float64, "score")


def _score(score_fn: ScoreFunction, x: np.ndarray, what: str) -> np.ndarray:
    """`score_fn(x)`, checked to be one finite score per sample."""
    scores = np.asarray(score_fn(np.ascontiguousarray(x, dtype=np.float32)), dtype=np.float64)
    if scores.shape != (len(x),):
        raise EbgenError(f"score function returned shape {scores.shape} for {what}, "
                         f"expected ({len(x)},)")
    return _check_scores(scores, f"scores of {what}")


# --- corruptions -------------------------------------------------------------------------

def uniform_noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Images of uniform noise in [-1, 1], shaped like `x`."""
    return rng.uniform(*PIXEL_RANGE, size=x.shape).astype(np.float32)


def gaussian_blur(x: np.ndarray, rng: np.random.Generator | None = None,
                  sigma: float = BLUR_SIGMA) -> np.ndarray:
    """`x` blurred by a separable Gaussian of `sigma` pixels, padded with the background."""
    radius = max(1, math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    out = np.asarray(x, dtype=np.float32)
    for axis in (2, 3):
        pad = [(0, 0)] * 4
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, constant_values=BACKGROUND)
        size = out.shape[axis]
        out = sum(weight * np.take(padded, np.arange(k, k + size), axis=axis)
                  for k, weight in enumerate(taps)).astype(np.float32)
    return out


def inverted(x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """`x` with every pixel negated (white digits on black become black on white)."""
    return -np.asarray(x, dtype=np.float32)


def shift_image(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """One (C, H, W) image moved `dy` rows down and `dx` columns right, filled, not wrapped."""
    out = np.full_like(image, BACKGROUND)
    _, h, w = image.shape
    if abs(dy) >= h or abs(dx) >= w:
        return out
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        image[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


#: (dy, dx) of the four directions `shifted` picks from: up, down, left, right.
SHIFT_DIRECTIONS = ((-SHIFT_PIXELS, 0), (SHIFT_PIXELS, 0), (0, -SHIFT_PIXELS), (0, SHIFT_PIXELS))


def shifted(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image moved `SHIFT_PIXELS` in a random one of the four directions."""
    x = np.asarray(x, dtype=np.float32)
    out = np.empty_like(x)
    for i, choice in enumerate(rng.integers(len(SHIFT_DIRECTIONS), size=len(x))):
        out[i] = shift_image(x[i], *SHIFT_DIRECTIONS[choice])
    return out


#: Corruptions scored by `anomaly_report`, in report order.
CORRUPTIONS: dict[str, Corruption] = {
    "noise": uniform_noise,
    "blur": gaussian_blur,
    "inverted": inverted,
    "shifted": shifted,
}


# --- metrics -----------------------------------------------------------------------------

def auroc(normal_scores: Any, anomalous_scores: Any) -> float:
    """Area under the ROC curve: P(anomalous score > normal score), ties counted half."""
    normal = _check_scores(normal_scores, "normal scores")
    anomalous = _check_scores(anomalous_scores, "anomalous scores")
    values, inverse, counts = np.unique(np.concatenate([normal, anomalous]),
                                        return_inverse=True, return_counts=True)
    mean_rank = np.cumsum(counts) - (counts - 1) / 2.0   # 1-based average rank per value
    ranks = mean_rank[inverse.ravel()][len(normal):]
    m, n = len(anomalous), len(normal)
    return float((ranks.sum() - m * (m + 1) / 2.0) / (m * n))


def auprc(normal_scores: Any, anomalous_scores: Any) -> float:
    """Average precision with anomalies as the positive class (Σ ΔRecall · Precision).

    Samples with equal scores enter at the same threshold, so ties are order-independent.
    """
    normal = _check_scores(normal_scores, "normal scores")
    anomalous = _check_scores(anomalous_scores, "anomalous scores")
    scores = np.concatenate([anomalous, normal])
    positive = np.concatenate([np.ones(len(anomalous)), np.zeros(len(normal))])
    order = np.argsort(-scores, kind="stable")
    scores, positive = scores[order], positive[order]
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]
    true_pos = np.cumsum(positive)[last_of_tie]
    predicted = (np.arange(len(scores)) + 1)[last_of_tie]
    recall_gain = np.diff(np.r_[0.0, true_pos]) / len(anomalous)
    return float(np.sum(recall_gain * true_pos / predicted))


# --- PCA baseline ------------------------------------------------------------------------

class PCABaseline:
    """Squared reconstruction error from the top principal components of the training data."""

    def __init__(self) -> None:
        self.mean: np.ndarray | None = None
        self.components: np.ndarray | None = None   # (k, d), orthonormal rows

    @property
    def n_components(self) -> int:
        """Components kept by `fit` (0 before fitting)."""
        return 0 if self.components is None else len(self.components)

    def fit(self, x: Any, n_components: int = 50) -> "PCABaseline":
        """Fit on images (or any (N, ...) array): SVD of the centred, flattened data."""
        if n_components < 1:
            raise EbgenError(f"PCA needs at least one component, got {n_components}")
        flat = _flat_matrix(x, "PCA training data")
        self.mean = flat.mean(axis=0)
        _, _, vt = np.linalg.svd(flat - self.mean, full_matrices=False)
        self.components = vt[:min(n_components, *flat.shape)]
        return self

    def score(self, x: Any) -> np.ndarray:
        """Squared reconstruction error ‖x − x̂‖² per sample (float64, shape (N,))."""
        if self.components is None or self.mean is None:
            raise EbgenError("PCA baseline is not fitted: call fit() before score()")
        flat = _flat_matrix(x, "PCA input")
        if flat.shape[1] != self.mean.shape[0]:
            raise EbgenError(f"PCA input has {flat.shape[1]} values per sample, "
                             f"fitted on {self.mean.shape[0]}")
        centred = flat - self.mean
        residual = centred - (centred @ self.components.T) @ self.components
        return np.einsum("ij,ij->i", residual, residual)


def _flat_matrix(x: Any, what: str) -> np.ndarray:
    """`x` flattened to a finite, non-empty float64 (N, d) matrix."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2 or x.size == 0:
        raise EbgenError(f"{what} must be a non-empty (N, ...) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise EbgenError(f"{what} holds NaN or infinite values")
    return x.reshape(len(x), -1)


# --- reports -----------------------------------------------------------------------------

def anomaly_report(score_fn: ScoreFunction, train_x: Any, heldout_x: Any, seed: int = 0,
                   pca_components: int = 50, max_heldout: int = 2000) -> dict[str, Any]:
    """AUROC of the energy and of PCA on each corruption: corrupted held-out digits are the
    anomalies, the clean held-out digits the normals. JSON-ready; deterministic given `seed`.

    At most `max_heldout` held-out digits are used (a seeded subset); PCA is fitted on `train_x`.
    """
    train_x = _check_images(train_x, "training images")
    heldout_x = _check_images(heldout_x, "held-out images")
    if max_heldout < 1:
        raise EbgenError(f"max_heldout must be at least 1, got {max_heldout}")
    streams = np.random.SeedSequence(seed).spawn(1 + len(CORRUPTIONS))
    if len(heldout_x) > max_heldout:
        pick = np.random.default_rng(streams[0]).permutation(len(heldout_x))[:max_heldout]
        heldout_x = heldout_x[np.sort(pick)]
    pca = PCABaseline().fit(train_x, pca_components)
    normal = {"energy": _score(score_fn, heldout_x, "held-out images"),
              "pca": pca.score(heldout_x)}
    report: dict[str, Any] = {"energy": {}, "pca": {}}
    for stream, (name, corrupt) in zip(streams[1:], CORRUPTIONS.items()):
        corrupted = corrupt(heldout_x, np.random.default_rng(stream))
        anomalous = {"energy": _score(score_fn, corrupted, f"{name} images"),
                     "pca": pca.score(corrupted)}
        for method in ("energy", "pca"):
            report[method][name] = auroc(normal[method], anomalous[method])
    report.update(num_heldout=len(heldout_x), pca_components=pca.n_components, seed=seed)
    return report


def heldout_class_report(score_fn: ScoreFunction, train_x: Any, heldout_x: Any,
                         heldout_labels: Any, anomaly_class: int,
                         pca_components: int = 50) -> dict[str, Any]:
    """The held-out-class protocol (Kumar et al. 2019): a model trained without
    `anomaly_class` scores the held-out split, whose digits of that class are the anomalies
    and the rest normal. AUPRC (the protocol's figure) and AUROC of the energy and of a PCA
    fitted on `train_x`; `anomaly_fraction` is the AUPRC of a random score.
    """
    train_x = _check_images(train_x, "training images")
    heldout_x = _check_images(heldout_x, "held-out images")
    labels = np.asarray(heldout_labels).ravel()
    if labels.shape != (len(heldout_x),):
        raise EbgenError(f"held-out labels have shape {np.shape(heldout_labels)}, "
                         f"expected ({len(heldout_x)},)")
    is_anomaly = labels == anomaly_class
    if is_anomaly.all() or not is_anomaly.any():
        raise EbgenError(f"class {anomaly_class} must be some but not all of the held-out "
                         f"labels ({int(is_anomaly.sum())} of {len(labels)})")
    pca = PCABaseline().fit(train_x, pca_components)
    scores = {"energy": _score(score_fn, heldout_x, "held-out images"),
              "pca": pca.score(heldout_x)}
    report: dict[str, Any] = {"anomaly_class": int(anomaly_class)}
    for method, s in scores.items():
        report[method] = {"auprc": auprc(s[~is_anomaly], s[is_anomaly]),
                          "auroc": auroc(s[~is_anomaly], s[is_anomaly])}
    report.update(num_normal=int((~is_anomaly).sum()), num_anomalous=int(is_anomaly.sum()),
                  anomaly_fraction=float(is_anomaly.mean()), pca_components=pca.n_components)
    return report
