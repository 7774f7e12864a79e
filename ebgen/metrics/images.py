"""Image-quality metrics for generated MNIST digits, from a small bundled classifier.

The classifier (`assets/mnist_classifier.onnx`, trained by `scripts/train_classifier.py` on
ebgen's own MNIST training split) maps images f32 [batch, 1, 28, 28] in [-1, 1] to class
logits and penultimate-layer features. From these come the sample-quality numbers of
`image_metrics`: how many digit classes the samples cover, how far their class histogram is
from uniform, how confidently they are recognised, and the Fréchet distance between samples
and real digits in the classifier's feature space (an MNIST analogue of FID).

Only numpy and onnxruntime are used (no torch), so this works on the torch-free serving path.
"""
from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import numpy as np

from ebgen.errors import EbgenError
from ebgen.sessions import ort_session

#: ONNX input of the classifier: images f32 [batch, 1, 28, 28] in [-1, 1].
CLASSIFIER_INPUT = "x"
#: ONNX outputs of the classifier: class logits f32 [batch, 10] ...
CLASSIFIER_LOGITS = "logits"
#: ... and penultimate-layer activations f32 [batch, F], the space of the Fréchet distance.
CLASSIFIER_FEATURES = "features"
#: Asset file names inside the `ebgen` package.
CLASSIFIER_ONNX = "mnist_classifier.onnx"
CLASSIFIER_INFO = "mnist_classifier.json"
#: Shape of one image the classifier takes.
IMAGE_SHAPE = (1, 28, 28)
NUM_CLASSES = 10
#: A class counts as covered when it receives at least this share of the argmax labels.
COVERAGE_SHARE = 0.01
#: A sample counts as confidently recognised when its top class probability is at least this.
CONFIDENT_PROBABILITY = 0.9


def _asset(name: str) -> Any:
    """The packaged asset file `name` (a Traversable path)."""
    return resources.files("ebgen") / "assets" / name


@functools.lru_cache(maxsize=1)
def load_classifier() -> Any:
    """The bundled MNIST classifier as a CPU `onnxruntime.InferenceSession` (created once)."""
    path = _asset(CLASSIFIER_ONNX)
    if not path.is_file():
        raise EbgenError(f"the MNIST classifier asset {CLASSIFIER_ONNX} is missing from the "
                         f"ebgen package: reinstall ebgen or run scripts/train_classifier.py")
    return ort_session(path.read_bytes())


def classifier_info() -> dict[str, Any]:
    """The classifier's sidecar record: held-out accuracy, split sizes, seed, provenance."""
    return json.loads(_asset(CLASSIFIER_INFO).read_text())


def _check_images(x: np.ndarray, what: str) -> np.ndarray:
    """`x` as float32 (N, 1, 28, 28), or `EbgenError` naming `what` and the shape it has."""
    x = np.asarray(x)
    if x.ndim != 4 or tuple(x.shape[1:]) != IMAGE_SHAPE or len(x) == 0:
        raise EbgenError(f"{what} have shape {tuple(x.shape)}: expected (N, 1, 28, 28) "
                         f"MNIST-sized grey images in [-1, 1] with N >= 1")
    return np.ascontiguousarray(x, dtype=np.float32)


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, computed stably."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def classify(x: np.ndarray, batch: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities (N, 10), features (N, F)) for images f32 (N, 1, 28, 28) in [-1, 1].

    Runs the bundled classifier `batch` images at a time. Raises `EbgenError` for a wrong shape.
    """
    x = _check_images(x, "images")
    session = load_classifier()
    probabilities, features = [], []
    for start in range(0, len(x), max(1, batch)):
        logits, feats = session.run([CLASSIFIER_LOGITS, CLASSIFIER_FEATURES],
                                    {CLASSIFIER_INPUT: x[start:start + batch]})
        probabilities.append(_softmax(logits.astype(np.float64)))
        features.append(feats)
    return np.concatenate(probabilities), np.concatenate(features)


def _gaussian_fit(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64) of `features` (N, F), N >= 2."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise EbgenError(f"features have shape {features.shape}: expected (N, F) with N >= 2")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (tiny negative eigenvalues → 0)."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, F) and (M, F).

    ‖μa − μb‖² + tr(Σa + Σb − 2 (Σa^½ Σb Σa^½)^½), with the matrix square roots taken by
    eigendecomposition of symmetric matrices (numpy only).
    """
    mean_a, cov_a = _gaussian_fit(features_a)
    mean_b, cov_b = _gaussian_fit(features_b)
    if mean_a.shape != mean_b.shape:
        raise EbgenError(f"feature sets have {mean_a.shape[0]} and {mean_b.shape[0]} dimensions: "
                         f"expected the same")
    sqrt_a = _sqrt_psd(cov_a)
    cross_trace = np.trace(_sqrt_psd(sqrt_a @ cov_b @ sqrt_a))
    distance = (np.sum((mean_a - mean_b) ** 2)
                + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross_trace)
    return float(max(distance, 0.0))


def image_metrics(samples: np.ndarray, real: np.ndarray) -> dict[str, Any]:
    """Quality of generated MNIST `samples` against `real` digits, both f32 (N, 1, 28, 28) in
    [-1, 1]; a JSON-ready dict of floats, ints and a list.

    - `classes_covered`: how many of the 10 classes receive at least 1 % (`COVERAGE_SHARE`)
      of the samples' argmax labels;
    - `class_kl_uniform`: KL(histogram of argmax labels ‖ uniform), in nats (0 = balanced,
      log 10 ≈ 2.30 = a single class);
    - `confident_share`: share of samples whose top class probability is ≥ 0.9;
    - `frechet_distance`: between samples and real digits in the classifier's feature space;
    - `num_samples`, `num_real`, and `class_histogram` (10 shares of the argmax labels);
    - `generator`: the distribution metrics of `ebgen.metrics.distribution` in the classifier's
      feature space — MMD² over the data-vs-data floor (median-heuristic bandwidth) and
      precision/recall beside those of the real digits' two halves (the ceiling).

    Needs at least 2 samples and 2 real digits (for the covariances). Like most classifiers it
    is confident on some inputs that are no digits at all (uniform noise reads as a sure "8"),
    so judge samples by all the numbers together; the Fréchet distance catches such inputs.
    """
    samples = _check_images(samples, "samples")
    real = _check_images(real, "real digits")
    probabilities, sample_features = classify(samples)
    _, real_features = classify(real)
    labels = probabilities.argmax(axis=1)
    histogram = np.bincount(labels, minlength=NUM_CLASSES) / len(labels)
    present = histogram > 0
    kl_uniform = float(np.sum(histogram[present] * np.log(histogram[present] * NUM_CLASSES)))
    return {
        "classes_covered": int(np.sum(histogram >= COVERAGE_SHARE)),
        "class_kl_uniform": max(kl_uniform, 0.0),
        "confident_share": float(np.mean(probabilities.max(axis=1) >= CONFIDENT_PROBABILITY)),
        "frechet_distance": frechet_distance(sample_features, real_features),
        "num_samples": int(len(samples)),
        "num_real": int(len(real)),
        "class_histogram": [float(share) for share in histogram],
        "generator": feature_distribution(sample_features, real_features),
    }


def feature_distribution(sample_features: np.ndarray, real_features: np.ndarray
                         ) -> dict[str, Any]:
    """MMD² ratio and precision/recall of samples against real digits, in feature space."""
    from . import distribution as dm

    if len(real_features) < 8 or len(sample_features) < 10:
        return {}
    mmd = dm.mmd_report(sample_features, real_features, bandwidth_factor=dm.FEATURES_BANDWIDTH,
                        local=False)
    half = len(real_features) // 2
    pr = dm.precision_recall_report(sample_features, real_features[:half],
                                    real_features[half:])
    return {"mmd2_ratio": mmd["mmd2_ratio"], "mmd2": mmd["mmd2"], "mmd2_floor": mmd["mmd2_floor"],
            "n": mmd["n"], **pr}


#: Components of the PCA feature space of image models the classifier cannot read.
PCA_COMPONENTS = 32


def pca_features(train: np.ndarray, components: int = PCA_COMPONENTS):
    """A map of images (N, C, H, W) to their coordinates on the top `components` principal
    axes of `train` (not whitened: distances keep the pixels' own scale). The feature space of
    `pca_image_metrics`, for models of any size and colour."""
    flat = np.asarray(train, dtype=np.float64).reshape(len(train), -1)
    mean = flat.mean(axis=0)
    _, _, axes = np.linalg.svd(flat - mean, full_matrices=False)
    axes = axes[:min(components, len(axes))]

    def project(x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float64).reshape(len(x), -1) - mean) @ axes.T
                ).astype(np.float32)

    return project


def pca_image_metrics(samples: np.ndarray, real: np.ndarray, train: np.ndarray,
                      components: int = PCA_COMPONENTS) -> dict[str, Any]:
    """The distribution metrics of `feature_distribution` and a Fréchet distance, in the PCA
    space of the training images: for image models without a bundled classifier (colour, or
    not MNIST-sized). `real` should be held-out images (not `train`)."""
    project = pca_features(train, components)
    sample_features, real_features = project(samples), project(real)
    return {"feature_space": f"PCA-{sample_features.shape[1]} of {len(train)} training images",
            "frechet_distance_pca": frechet_distance(sample_features, real_features),
            "generator": feature_distribution(sample_features, real_features)}
