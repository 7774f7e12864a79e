"""Figures written during training and evaluation: image grids, 2-D sample plots, histograms.

Every file is written atomically (`ebgen.files.atomic_write`), so a reader never sees a
half-written PNG. matplotlib (Agg backend) and pillow are imported inside
the functions, so importing this module is cheap. Pixels go through `pixels.unit_to_uint8`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .files import atomic_write
from .pixels import unit_to_uint8


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def image_grid(x: np.ndarray, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile images (N, C, H, W) in [-1, 1] into one uint8 image: (rows·…, cols·…, C), or 2-D
    for grey. `nrow` is the number of images per row (default ceil(sqrt(N)))."""
    from .images import tile_images

    x = _to_numpy(x)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3) or len(x) == 0:
        raise ValueError(f"expected images (N, 1|3, H, W) with N > 0, got shape {x.shape}")
    grid = tile_images(unit_to_uint8(np.nan_to_num(x)), nrow, padding).transpose(1, 2, 0)
    return grid[:, :, 0] if grid.shape[2] == 1 else grid


def save_image_grid(x: np.ndarray, path: str | os.PathLike, nrow: int | None = None) -> Path:
    """Write `image_grid(x, nrow)` as a PNG at `path`."""
    from PIL import Image

    img = Image.fromarray(image_grid(x, nrow))
    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def _save_figure(fig: Any, path: str | os.PathLike) -> Path:
    plt = _pyplot()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100,
                                                           bbox_inches="tight"))
    finally:
        plt.close(fig)


def save_points_plot(samples: np.ndarray, path: str | os.PathLike,
                     energy_fn: Callable[[np.ndarray], np.ndarray] | None = None,
                     box: tuple[float, float, float, float] | None = None,
                     data: np.ndarray | None = None, title: str | None = None,
                     resolution: int = 200) -> Path:
    """Scatter 2-D samples over filled contours of the model's log-density −E − log Z.

    The log-density is shown over a 15-nat range below its peak (bright = likely); optional
    `data` are drawn as faint grey dots. The box defaults to one around samples and data.
    Points of D ≠ 2 dimensions are shown by their first two columns (a 1-D set on a line),
    without the landscape (`energy_fn` and `box` are ignored).
    """
    from .metrics.points import default_box, energy_grid

    samples = _to_numpy(samples)
    if samples.ndim == 2 and samples.shape[1] != 2:
        plane = lambda a: np.pad(a[:, :2], ((0, 0), (0, max(0, 2 - a.shape[1]))))
        title = f"{title or ''} (columns 1–2 of {samples.shape[1]})".strip()
        samples, energy_fn, box = plane(samples), None, None
        data = None if data is None else plane(_to_numpy(data))
    samples = samples.reshape(-1, 2)
    pool = samples if data is None else np.concatenate([samples, _to_numpy(data).reshape(-1, 2)])
    box = tuple(box) if box is not None else default_box(pool)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    try:
        if energy_fn is not None:
            xs, ys, energy = energy_grid(energy_fn, box, resolution)
            logp = np.nan_to_num(-energy, nan=-np.inf)
            peak = logp[np.isfinite(logp)].max() if np.isfinite(logp).any() else 0.0
            logp = np.clip(logp - peak, -15.0, 0.0)
            ax.contourf(xs, ys, logp, levels=30, cmap="viridis")
        if data is not None:
            d = _to_numpy(data).reshape(-1, 2)
            ax.scatter(d[:, 0], d[:, 1], s=1, c="lightgrey", alpha=0.3, linewidths=0)
        ax.scatter(samples[:, 0], samples[:, 1], s=2, c="orangered", alpha=0.7, linewidths=0)
        ax.set_xlim(box[0], box[1])
        ax.set_ylim(box[2], box[3])
        ax.set_aspect("equal")
        if title:
            ax.set_title(title)
    except BaseException:
        plt.close(fig)
        raise
    return _save_figure(fig, path)


def save_energy_histogram(groups: dict[str, np.ndarray], path: str | os.PathLike,
                          title: str | None = None, bins: int = 60) -> Path:
    """Overlaid histograms of energies per named group (e.g. data / samples / noise).

    All groups share one set of bins over the pooled finite values; non-finite values are
    dropped.
    """
    values = {k: _to_numpy(v).ravel() for k, v in groups.items()}
    values = {k: v[np.isfinite(v)] for k, v in values.items()}
    pooled = np.concatenate([v for v in values.values()] + [np.zeros(0, np.float32)])
    lo, hi = (float(pooled.min()), float(pooled.max())) if len(pooled) else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    try:
        for name, v in values.items():
            if len(v):
                ax.hist(v, bins=edges, alpha=0.5, density=True, label=f"{name} (n={len(v)})")
        ax.set_xlabel("energy")
        ax.set_ylabel("density")
        if values:
            ax.legend()
        if title:
            ax.set_title(title)
    except BaseException:
        plt.close(fig)
        raise
    return _save_figure(fig, path)
