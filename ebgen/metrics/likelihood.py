"""Held-out likelihood in nats and bits/dim, and the Gaussian baselines a density model must beat.

With log Z known (`model.json`'s `log_partition`, from `ebgen export --log-z`), the energy is a
normalised density: log p(x) = −E(x) − log Z, in the data's own units. For images the density
is over pixels in [-1, 1], where level k of an 8-bit pixel sits at k/127.5 − 1. Held-out images
are dequantised uniformly over each level's bin (width 1/127.5; the two end levels get the
half-bins inside [-1, 1], as no model input may leave it), and

    bits/dim = E_U[−log p(x) − Σ_d log width_d] / (D log 2),   −log p(x) = E(x) + log Z,

an upper bound on the bits/dim of the discrete pixels (Theis et al. 2016; mass a density puts
outside [-1, 1] only adds to it). The baselines are fitted by maximum likelihood on the same
dequantised training images and scored the same way: a diagonal Gaussian and probabilistic PCA
(Tipping & Bishop 1999: the top-q principal axes plus isotropic noise, closed form).
"""
from __future__ import annotations

import math

import numpy as np

#: Width of one 8-bit pixel level in [-1, 1] (`ebgen.pixels`: k ↦ k/127.5 − 1).
PIXEL_BIN = 1 / 127.5
#: Principal axes of the PPCA baseline.
PPCA_COMPONENTS = 50
#: Variance floor of the Gaussian baselines (a pixel that never changes would give +∞).
MIN_VARIANCE = 1e-4


def dequantise(images: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Images in [-1, 1] on the 8-bit grid spread uniformly over their levels' bins inside
    [-1, 1] (float64), and each image's log bin volume Σ_d log width_d."""
    x = np.asarray(images, dtype=np.float64)
    low = np.maximum(x - 0.5 * PIXEL_BIN, -1.0)
    high = np.minimum(x + 0.5 * PIXEL_BIN, 1.0)
    width = high - low
    volume = np.log(width).reshape(len(x), -1).sum(1)
    return low + rng.random(x.shape) * width, volume


def bits_per_dim(discrete_nll: np.ndarray | float, dim: int) -> float:
    """Mean negative log-probability of discrete samples (nats) in bits per dimension."""
    return float(np.mean(discrete_nll)) / dim / math.log(2)


def diagonal_gaussian_nll(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """−log N(test; mean, diag var) per test row, the Gaussian fitted to `train` (nats)."""
    train, test = _flat(train), _flat(test)
    mean, var = train.mean(0), np.maximum(train.var(0), MIN_VARIANCE)
    return 0.5 * (((test - mean) ** 2 / var).sum(1) + np.log(2 * math.pi * var).sum())


def ppca_nll(train: np.ndarray, test: np.ndarray, components: int = PPCA_COMPONENTS
             ) -> np.ndarray:
    """−log p(test) per row under probabilistic PCA with `components` axes fitted to `train`.

    C = W Wᵀ + σ² I with σ² the mean of the discarded eigenvalues and W = U (Λ − σ²)^½, the
    maximum-likelihood solution; log-det and the Mahalanobis term from the eigenvalues.
    """
    train, test = _flat(train), _flat(test)
    dim = train.shape[1]
    q = min(components, dim - 1, len(train) - 1)
    mean = train.mean(0)
    _, singular, axes = np.linalg.svd(train - mean, full_matrices=False)
    eigen = singular ** 2 / len(train)
    tail = np.concatenate([eigen[q:], np.zeros(dim - len(eigen))])
    noise = max(float(tail.mean()), MIN_VARIANCE)
    top = np.maximum(eigen[:q], noise)
    centred = test - mean
    projected = centred @ axes[:q].T                      # coordinates on the kept axes
    inside = (projected ** 2 / top).sum(1)
    outside = ((centred ** 2).sum(1) - (projected ** 2).sum(1)) / noise
    log_det = np.log(top).sum() + (dim - q) * math.log(noise)
    return 0.5 * (inside + outside + log_det + dim * math.log(2 * math.pi))


def image_likelihood_report(energy, log_z: float, train: np.ndarray, test: np.ndarray,
                            log_z_reverse: float | None = None, seed: int = 0
                            ) -> dict[str, float]:
    """bits/dim of held-out images `test` under exp(−E)/Z and under the two Gaussian baselines
    fitted on `train` (all in [-1, 1], dequantised the same way); `energy` maps float32
    images to energies. With `log_z_reverse` (AIS from above) also the bits/dim it gives: the
    model's figure lies between the two as far as the AIS estimates bracket log Z."""
    rng = np.random.default_rng(seed)
    (train_x, _), (test_x, volume) = dequantise(train, rng), dequantise(test, rng)
    dim = int(np.prod(test_x.shape[1:]))
    energies = np.asarray(energy(test_x.astype(np.float32)), dtype=np.float64)
    report = {"heldout_nll_nats": float(np.mean(energies + log_z)),
              "bits_per_dim": bits_per_dim(energies + log_z - volume, dim)}
    if log_z_reverse is not None:
        report["bits_per_dim_reverse_log_z"] = bits_per_dim(energies + log_z_reverse - volume,
                                                            dim)
    report.update({
        "bits_per_dim_diagonal_gaussian": bits_per_dim(
            diagonal_gaussian_nll(train_x, test_x) - volume, dim),
        f"bits_per_dim_ppca{PPCA_COMPONENTS}": bits_per_dim(
            ppca_nll(train_x, test_x) - volume, dim),
        "num_heldout": int(len(test_x))})
    return report


def _flat(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(len(x), -1)
