"""The bundled MNIST classifier and the image-quality metrics built on it (`ebgen.metrics.images`).

Uses the 512 real test digits in tests/data/mnist. These overlap the classifier's training
split (it trains on 9,000 of the 10,000 MNIST test digits), so the accuracy bar here checks that
the asset loads and reads pixels the right way round; its held-out accuracy is in the sidecar.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ebgen.errors import EbgenError
from ebgen.metrics.images import (NUM_CLASSES, classifier_info, classify, frechet_distance,
                                 image_metrics, load_classifier)
from ebgen.images import load_mnist
from ebgen.pixels import uint8_to_unit

MNIST_DIR = Path(__file__).parent / "data" / "mnist"

pytestmark = pytest.mark.mnist


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """The 512 real digits as float32 (N, 1, 28, 28) in [-1, 1], and their labels."""
    images, labels = load_mnist(MNIST_DIR)["test"]
    return uint8_to_unit(images), labels


@pytest.fixture(scope="module")
def classified(digits) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, features) of the real digits."""
    return classify(digits[0])


def test_classifier_recognises_real_digits(digits, classified) -> None:
    _, labels = digits
    probabilities, _ = classified
    assert probabilities.shape == (len(labels), NUM_CLASSES)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert np.mean(probabilities.argmax(axis=1) == labels) >= 0.97


def test_classify_gives_the_same_answers_in_any_batch_size(digits, classified) -> None:
    probabilities, features = classified
    small_probabilities, small_features = classify(digits[0][:100], batch=7)
    assert features.shape == (len(digits[0]), classifier_info()["feature_dim"])
    np.testing.assert_allclose(small_probabilities, probabilities[:100], atol=1e-5)
    np.testing.assert_allclose(small_features, features[:100], atol=1e-4)


def test_classifier_session_is_cached_and_named() -> None:
    session = load_classifier()
    assert session is load_classifier()
    assert [i.name for i in session.get_inputs()] == ["x"]
    assert [o.name for o in session.get_outputs()] == ["logits", "features"]


def test_classifier_info_records_heldout_accuracy() -> None:
    info = classifier_info()
    assert info["heldout_accuracy"] >= 0.98
    assert (info["num_train"], info["num_heldout"], info["seed"]) == (9000, 1000, 0)


def test_image_metrics_of_real_digits_look_ideal(digits) -> None:
    images, _ = digits
    metrics = image_metrics(images[:256], images[256:])
    assert json.loads(json.dumps(metrics)) == metrics
    assert metrics["classes_covered"] == 10
    assert metrics["class_kl_uniform"] < 0.1
    assert metrics["confident_share"] > 0.9
    assert (metrics["num_samples"], metrics["num_real"]) == (256, 256)
    assert len(metrics["class_histogram"]) == 10
    assert math.isclose(sum(metrics["class_histogram"]), 1.0, abs_tol=1e-9)


def test_image_metrics_flag_a_single_class(digits) -> None:
    images, labels = digits
    metrics = image_metrics(images[labels == 3], images)
    assert metrics["classes_covered"] <= 2
    assert metrics["class_kl_uniform"] > 0.8 * math.log(10)
    assert metrics["frechet_distance"] > image_metrics(images[:256], images[256:])[
        "frechet_distance"]


def test_feature_distribution_metrics_tell_real_digits_from_one_class(digits) -> None:
    images, labels = digits
    half = len(images) // 2
    real = image_metrics(images[:half], images[half:])["generator"]
    threes = image_metrics(images[labels == 3], images[half:])["generator"]
    assert real["mmd2_ratio"] < 2.0 and real["recall_ratio"] > 0.8
    assert threes["mmd2_ratio"] > 2.5 * real["mmd2_ratio"] and threes["recall_ratio"] < 0.5


def test_classes_covered_counts_classes_with_at_least_one_percent(digits, classified) -> None:
    images, _ = digits
    predicted = classified[0].argmax(axis=1)
    one, seven = images[predicted == 1][:1], images[predicted == 7][:1]
    rare = np.concatenate([np.repeat(one, 199, axis=0), seven])       # class 7 at 0.5 %
    assert image_metrics(rare, images)["classes_covered"] == 1
    common = np.concatenate([np.repeat(one, 197, axis=0), np.repeat(seven, 3, axis=0)])  # 1.5 %
    assert image_metrics(common, images)["classes_covered"] == 2


def test_confident_share_and_histogram_follow_the_classifier(digits) -> None:
    images, _ = digits
    rng = np.random.default_rng(0)
    blends = (0.5 * images + 0.5 * images[rng.permutation(len(images))]).astype(np.float32)
    probabilities, _ = classify(blends)
    metrics = image_metrics(blends, images)
    top = probabilities.max(axis=1)
    assert 0.05 < np.mean(top >= 0.9) < 0.95          # the blends straddle the threshold
    assert metrics["confident_share"] == pytest.approx(np.mean(top >= 0.9))
    counts = np.bincount(probabilities.argmax(axis=1), minlength=NUM_CLASSES)
    assert metrics["class_histogram"] == pytest.approx(list(counts / len(blends)))


def test_frechet_distance_separates_real_from_noise_and_inverted(digits, classified) -> None:
    images, _ = digits
    _, features = classified
    halves = frechet_distance(features[:256], features[256:])
    noise = np.random.default_rng(0).uniform(-1, 1, images.shape).astype(np.float32)
    to_noise = frechet_distance(features, classify(noise)[1])
    to_inverted = frechet_distance(features, classify(-images)[1])
    assert halves > 0
    assert to_noise > 10 * halves
    assert to_inverted > 10 * halves


def test_frechet_distance_of_a_set_with_itself_is_zero(classified) -> None:
    _, features = classified
    scale = float(np.trace(np.cov(features, rowvar=False)))
    assert frechet_distance(features, features) < 1e-6 * scale


def test_frechet_distance_matches_closed_forms() -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    shift = rng.normal(size=6)
    # A shift moves only the mean: the distance is the squared shift.
    assert math.isclose(frechet_distance(features, features + shift), float(shift @ shift),
                        rel_tol=1e-6)
    # Doubling: Σb = 4 Σa, so tr(Σa + 4Σa − 2·2Σa) = tr(Σa), plus the squared mean.
    mean, cov = features.mean(axis=0), np.cov(features, rowvar=False)
    assert math.isclose(frechet_distance(features, 2 * features),
                        float(mean @ mean + np.trace(cov)), rel_tol=1e-6)


@pytest.mark.parametrize("shape", [(4, 28, 28), (4, 3, 28, 28), (4, 1, 32, 32), (0, 1, 28, 28)])
def test_wrong_image_shapes_raise_a_one_line_error(shape) -> None:
    bad = np.zeros(shape, dtype=np.float32)
    for call in (lambda: classify(bad), lambda: image_metrics(bad, bad)):
        with pytest.raises(EbgenError) as caught:
            call()
        assert "\n" not in str(caught.value) and "(N, 1, 28, 28)" in str(caught.value)


def test_frechet_distance_rejects_mismatched_features() -> None:
    with pytest.raises(EbgenError):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
