"""The image half of `ebgen eval`: energies, classifier metrics, anomaly AUROCs and pictures.

Energies of held-out data, generator samples and uniform noise come first (a working energy
orders them data < samples < noise). Models of 28×28 grey digits also get the bundled MNIST
classifier's metrics (`ebgen.metrics.images`), any other image model the same distribution metrics
in the PCA space of its training images; `anomaly` adds the energy's AUROC against
corrupted digits beside a PCA baseline (`ebgen.metrics.anomaly`); `plots` writes a sample grid, a
grid of real digits and a histogram of energies.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ebgen.config import ModelConfig

#: The sample shape the bundled classifier reads (MNIST digits).
CLASSIFIER_SHAPE = (1, 28, 28)
#: Most training digits the PCA baseline is fitted on.
MAX_PCA_TRAIN = 10_000


def evaluate_images(sample: Callable[[int], np.ndarray],
                    energy: Callable[[np.ndarray], np.ndarray], model: ModelConfig,
                    train: Any, heldout: Any, num_samples: int, seed: int = 0,
                    anomaly: bool = False, plots: Path | None = None) -> dict[str, Any]:
    """The report of an image model: `train`/`heldout` are `ebgen.data.Dataset`s."""
    rng = np.random.default_rng(seed)
    data = _pick(heldout, 10_000, rng)
    samples = np.asarray(sample(num_samples), dtype=np.float32)
    noise = rng.uniform(-1, 1, size=(min(num_samples, 2500), *model.sample_shape))
    energies = {"data": energy(data), "samples": energy(samples),
                "noise": energy(noise.astype(np.float32))}
    report: dict[str, Any] = {"num_samples": int(num_samples), "num_heldout": len(data)}
    for name, e in energies.items():
        report[f"energy_{name}_mean"] = float(e.mean())
        report[f"energy_{name}_std"] = float(e.std())
    if tuple(model.sample_shape) == CLASSIFIER_SHAPE:
        from ebgen.metrics.images import classifier_info, image_metrics

        report.update(image_metrics(samples, data))
        report["classifier_accuracy"] = classifier_info().get("heldout_accuracy")
    else:  # colour, or not digit-sized: the distribution metrics in a PCA feature space
        from ebgen.metrics.images import pca_image_metrics

        report.update(pca_image_metrics(samples, data, _pick(train, MAX_PCA_TRAIN, rng)))
    if anomaly:
        from ebgen.metrics.anomaly import anomaly_report

        report["anomaly"] = anomaly_report(energy, _pick(train, MAX_PCA_TRAIN, rng), data,
                                           seed=seed)
    if plots is not None:
        report["plots"] = _image_plots(samples, data, energies, plots)
    return report


def _pick(dataset: Any, most: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `most` samples of an `ebgen.data.Dataset`, in order, as floats in [-1, 1]."""
    import torch

    index = np.sort(rng.permutation(len(dataset))[:min(len(dataset), most)])
    return dataset.batch(torch.from_numpy(index)).cpu().numpy()


def _image_plots(samples: np.ndarray, data: np.ndarray, energies: dict[str, np.ndarray],
                 plots: Path) -> list[str]:
    from ebgen import plots as plotting

    written = [plotting.save_image_grid(samples[:64], plots / "samples.png"),
               plotting.save_image_grid(data[:64], plots / "data.png"),
               plotting.save_energy_histogram(energies, plots / "energy_histogram.png",
                                              title="energies: held-out data, samples, noise")]
    return [str(p) for p in written]
