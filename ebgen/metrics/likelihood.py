"""Held-out likelihood in nats and bits/dim, and the Gaussian baselines a density model must beat.

With log Z known (`model.json`'s `log_partition`, from `ebgen export --log-z`), the energy is a
normalised density: log p(x) = −E(x) − log Z, in the data's own units. For images the density
is over pixels in [-1, 1]; discrete 8-bit pixels are dequantised uniformly (x = k/127.5 − 1 +
(U − ½)/127.5, U ~ Uniform(0, 1): one bin of width 1/127.5 per level), so

    bits/dim = (−log p(x) / D + log 127.5) / log 2,   with −log p(x) = E(x) + log Z,

an upper bound on the discrete data's bits/dim (Theis et al. 2016) — the convention of
likelihood tables for 8-bit images. The baselines are fitted by maximum likelihood on the same
dequantised training images: a diagonal Gaussian and probabilistic PCA (Tipping & Bishop 1999:
the top-q principal axes plus isotropic noise, closed form).
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


def dequantise(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Images in [-1, 1] on the 8-bit grid, spread uniformly over their pixel bins (float64)."""
    x = np.asarray(images, dtype=np.float64)
    return x + (rng.random(x.shape) - 0.5) * PIXEL_BIN


def bits_per_dim(nats: np.ndarray | float, dim: int, pixels: bool = True) -> float:
    """Mean negative log-likelihood `nats` per sample (in [-1, 1] units) as bits per dimension;
    for 8-bit images (`pixels`) per pixel level, i.e. with the bin width taken out."""
    per_dim = float(np.mean(nats)) / dim
    if pixels:  # P(level) ≈ p(x) · bin width per dimension
        per_dim -= math.log(PIXEL_BIN)
    return per_dim / math.log(2)


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
                            seed: int = 0) -> dict[str, float]:
    """bits/dim of held-out images `test` under exp(−E)/Z and under the two Gaussian baselines
    fitted on `train` (all in [-1, 1], dequantised the same way); `energy` maps float32
    images to energies."""
    rng = np.random.default_rng(seed)
    train_x, test_x = dequantise(train, rng), dequantise(test, rng)
    dim = int(np.prod(test_x.shape[1:]))
    nll = np.asarray(energy(test_x.astype(np.float32)), dtype=np.float64) + log_z
    return {"heldout_nll_nats": float(nll.mean()),
            "bits_per_dim": bits_per_dim(nll, dim),
            "bits_per_dim_diagonal_gaussian": bits_per_dim(
                diagonal_gaussian_nll(train_x, test_x), dim),
            f"bits_per_dim_ppca{PPCA_COMPONENTS}": bits_per_dim(ppca_nll(train_x, test_x), dim),
            "num_heldout": int(len(test_x))}


def _flat(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(len(x), -1)
