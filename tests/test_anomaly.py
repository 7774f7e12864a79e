"""Tests of `ebgen.metrics.anomaly` (metrics, corruptions, PCA baseline, reports) and a smoke run of
`benchmarks/heldout_class.py`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ebgen.metrics.anomaly import (CORRUPTIONS, PCABaseline, anomaly_report, auprc, auroc,
                           gaussian_blur, heldout_class_report, inverted, shifted)
from ebgen.errors import EbgenError
from ebgen.images import load_mnist
from ebgen.pixels import uint8_to_unit

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT / "tests" / "data" / "mnist"


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """The 512 real MNIST test digits as float32 (512, 1, 28, 28) in [-1, 1], and labels."""
    images, labels = load_mnist(MNIST)["test"]
    return uint8_to_unit(images), labels


def centre_of_mass(x: np.ndarray) -> np.ndarray:
    """(row, column) centre of the ink ((x + 1) / 2) of each image, shape (N, 2)."""
    ink = ((x + 1) / 2).sum(axis=1)
    total = ink.sum(axis=(1, 2))
    rows = (ink.sum(axis=2) * np.arange(ink.shape[1])).sum(axis=1) / total
    cols = (ink.sum(axis=1) * np.arange(ink.shape[2])).sum(axis=1) / total
    return np.stack([rows, cols], axis=1)


def total_variation(x: np.ndarray) -> float:
    return float(np.abs(np.diff(x, axis=2)).sum() + np.abs(np.diff(x, axis=3)).sum())


# --- metrics -----------------------------------------------------------------------------

def test_auroc_hand_cases() -> None:
    assert auroc([0.0, 1.0], [2.0, 3.0]) == 1.0          # perfect separation
    assert auroc([2.0, 3.0], [0.0, 1.0]) == 0.0          # reversed
    assert auroc([5.0, 5.0], [5.0, 5.0, 5.0]) == 0.5     # identical
    assert auroc([0.1, 0.4], [0.35, 0.8]) == pytest.approx(3 / 4)
    assert auroc([1.0, 2.0], [2.0, 3.0]) == pytest.approx(3.5 / 4)  # one tie counts half


def test_auroc_matches_pair_count() -> None:
    rng = np.random.default_rng(0)
    normal, anomalous = rng.integers(0, 5, 30).astype(float), rng.integers(1, 6, 20).astype(float)
    pairs = [(a > n) + 0.5 * (a == n) for a in anomalous for n in normal]
    assert auroc(normal, anomalous) == pytest.approx(np.mean(pairs))


def test_auprc_hand_cases() -> None:
    assert auprc([0.0, 1.0], [2.0, 3.0]) == 1.0
    # ranking A(0.8) N(0.4) A(0.35) N(0.1): precision 1/1 and 2/3 at the two anomalies
    assert auprc([0.1, 0.4], [0.35, 0.8]) == pytest.approx((1 + 2 / 3) / 2)
    # reversed, ranking N N A A: precision 1/3 and 2/4
    assert auprc([2.0, 3.0], [0.0, 1.0]) == pytest.approx((1 / 3 + 2 / 4) / 2)
    # all tied: one threshold, precision = the anomaly fraction
    assert auprc([1.0, 1.0], [1.0, 1.0, 1.0]) == pytest.approx(3 / 5)


@pytest.mark.parametrize("metric", [auroc, auprc])
@pytest.mark.parametrize("normal, anomalous", [([], [1.0]), ([1.0], []), ([np.nan], [1.0]),
                                               ([1.0], [np.inf]), ([[1.0]], [1.0])])
def test_metric_input_errors(metric, normal, anomalous) -> None:
    with pytest.raises(EbgenError) as err:
        metric(normal, anomalous)
    assert "\n" not in str(err.value)


# --- corruptions -------------------------------------------------------------------------

def test_corruption_names() -> None:
    assert list(CORRUPTIONS) == ["noise", "blur", "inverted", "shifted"]


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corruption_keeps_shape_dtype_range(digits, name) -> None:
    x = digits[0][:64]
    before = x.copy()
    out = CORRUPTIONS[name](x, np.random.default_rng(1))
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= -1.0 and out.max() <= 1.0
    assert not np.allclose(out, x)
    assert np.array_equal(x, before)                     # a copy, input untouched
    again = CORRUPTIONS[name](x, np.random.default_rng(1))
    assert np.array_equal(out, again)                    # deterministic given the rng


def test_inverted_is_an_involution(digits) -> None:
    x = digits[0][:16]
    assert np.array_equal(inverted(inverted(x)), x)
    assert np.array_equal(inverted(x), -x)


def test_shifted_moves_a_blob_by_eight_pixels() -> None:
    x = np.full((64, 1, 28, 28), -1.0, np.float32)
    x[:, :, 11:17, 12:16] = 1.0                          # a blob far from every edge
    moved = centre_of_mass(shifted(x, np.random.default_rng(0))) - centre_of_mass(x)
    assert np.allclose(np.sort(np.abs(moved), axis=1), [0.0, 8.0], atol=1e-4)
    directions = {tuple(np.sign(np.round(d)).astype(int)) for d in moved}
    assert directions == {(-1, 0), (1, 0), (0, -1), (0, 1)}


def test_shifted_fills_with_background_without_wrapping() -> None:
    x = np.full((8, 1, 28, 28), 1.0, np.float32)
    out = shifted(x, np.random.default_rng(0))
    assert np.all((out == -1.0).sum(axis=(1, 2, 3)) == 8 * 28)   # 8 emptied rows or columns
    assert np.all((out == 1.0).sum(axis=(1, 2, 3)) == 20 * 28)


def test_shifted_real_digits(digits) -> None:
    moved = centre_of_mass(shifted(digits[0], np.random.default_rng(0))) - centre_of_mass(digits[0])
    along, across = np.abs(moved).max(axis=1), np.abs(moved).min(axis=1)
    assert 6.0 < np.median(along) <= 8.0 + 1e-3          # less than 8 where ink is cropped
    assert np.median(across) < 0.5


def test_blur_reduces_total_variation(digits) -> None:
    x = digits[0][:64]
    assert total_variation(gaussian_blur(x)) < 0.7 * total_variation(x)


def test_blur_has_sigma_one_and_a_half_and_background_padding() -> None:
    background = np.full((1, 1, 28, 28), -1.0, np.float32)
    assert np.array_equal(gaussian_blur(background), background)   # edges padded with -1
    dot = background.copy()
    dot[0, 0, 14, 14] = 1.0
    ink = (gaussian_blur(dot)[0, 0] + 1) / 2
    assert ink.sum() == pytest.approx(1.0, rel=1e-5)              # normalised kernel
    profile = ink.sum(axis=0)
    variance = (profile * (np.arange(28) - 14.0) ** 2).sum() / profile.sum()
    assert variance == pytest.approx(1.5 ** 2, rel=0.05)          # truncated at 3σ


# --- PCA baseline ------------------------------------------------------------------------

def test_pca_reconstructs_training_data_at_its_rank() -> None:
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(40, 5)) @ rng.normal(size=(5, 30)) + 3.0).reshape(40, 1, 5, 6)
    exact = PCABaseline().fit(x, n_components=5)
    assert exact.n_components == 5
    assert np.all(exact.score(x) < 1e-18 * np.sum(x ** 2))
    assert PCABaseline().fit(x, n_components=4).score(x).mean() > 1e-3
    assert PCABaseline().fit(x[:10], n_components=50).n_components == 10   # capped at min(n, d)


def test_pca_scores_digits_below_noise(digits) -> None:
    x = digits[0]
    pca = PCABaseline().fit(x[:400], n_components=50)
    noise = np.random.default_rng(0).uniform(-1, 1, size=x[400:].shape).astype(np.float32)
    on_digits, on_noise = pca.score(x[400:]), pca.score(noise)
    assert on_digits.shape == (112,) and on_digits.max() < on_noise.min()
    assert auroc(on_digits, on_noise) == 1.0


def test_pca_errors() -> None:
    with pytest.raises(EbgenError, match="not fitted"):
        PCABaseline().score(np.zeros((2, 1, 2, 2)))
    with pytest.raises(EbgenError, match="non-empty"):
        PCABaseline().fit(np.zeros((0, 1, 2, 2)))
    with pytest.raises(EbgenError, match="NaN"):
        PCABaseline().fit(np.full((3, 1, 2, 2), np.nan))
    pca = PCABaseline().fit(np.random.default_rng(0).normal(size=(5, 1, 2, 2)), 2)
    with pytest.raises(EbgenError, match="fitted on 4"):
        pca.score(np.zeros((2, 1, 3, 3)))


# --- reports -----------------------------------------------------------------------------

def test_anomaly_report_with_pca_scores(digits) -> None:
    train_x, heldout_x = digits[0][:384], digits[0][384:]
    score = PCABaseline().fit(train_x, 30).score
    report = anomaly_report(score, train_x, heldout_x, seed=3, pca_components=30)
    assert set(report["energy"]) == set(report["pca"]) == set(CORRUPTIONS)
    assert report["energy"] == report["pca"]     # the same scorer either way
    assert report["energy"]["noise"] > 0.9 and report["energy"]["inverted"] > 0.9
    assert (report["num_heldout"], report["pca_components"]) == (128, 30)
    assert json.loads(json.dumps(report)) == report
    assert anomaly_report(score, train_x, heldout_x, seed=3, pca_components=30) == report
    small = anomaly_report(score, train_x, heldout_x, seed=3, pca_components=30, max_heldout=50)
    assert small["num_heldout"] == 50


def test_anomaly_report_errors(digits) -> None:
    x = digits[0][:32]
    energy = lambda batch: batch.reshape(len(batch), -1).sum(axis=1)  # noqa: E731
    with pytest.raises(EbgenError, match="empty"):
        anomaly_report(energy, x, x[:0])
    with pytest.raises(EbgenError, match="NaN"):
        anomaly_report(energy, x, np.where(x > 0, np.nan, x))
    with pytest.raises(EbgenError, match="N, C, H, W"):
        anomaly_report(energy, x, x[:, 0])
    with pytest.raises(EbgenError, match="shape"):
        anomaly_report(lambda batch: energy(batch)[:-1], x, x)
    with pytest.raises(EbgenError, match="NaN"):
        anomaly_report(lambda batch: energy(batch) * np.nan, x, x)


def test_heldout_class_report(digits) -> None:
    images, labels = digits
    train_x, heldout_x, heldout_labels = images[:384][labels[:384] != 7], images[384:], labels[384:]
    is_seven = {img.tobytes(): float(lab == 7) for img, lab in zip(heldout_x, heldout_labels)}
    oracle = lambda batch: np.array([is_seven[img.tobytes()] for img in batch])  # noqa: E731
    report = heldout_class_report(oracle, train_x, heldout_x, heldout_labels, anomaly_class=7)
    sevens = int((heldout_labels == 7).sum())
    assert report["energy"] == {"auprc": 1.0, "auroc": 1.0}
    assert 0.0 <= report["pca"]["auprc"] <= 1.0 and 0.0 <= report["pca"]["auroc"] <= 1.0
    assert (report["num_anomalous"], report["num_normal"]) == (sevens, 128 - sevens)
    assert report["anomaly_fraction"] == pytest.approx(sevens / 128)
    assert report["anomaly_class"] == 7 and report["pca_components"] == 50
    assert json.loads(json.dumps(report)) == report
    with pytest.raises(EbgenError, match="some but not all"):
        heldout_class_report(oracle, train_x, heldout_x, heldout_labels, anomaly_class=11)
    with pytest.raises(EbgenError, match="labels have shape"):
        heldout_class_report(oracle, train_x, heldout_x, heldout_labels[:-1], anomaly_class=7)


# --- benchmark smoke run -----------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.mnist
def test_heldout_class_benchmark_smoke(tmp_path: Path) -> None:
    command = [sys.executable, str(ROOT / "benchmarks" / "heldout_class.py"),
               "--data", str(MNIST), "--steps", "3", "--digits", "3",
               "--out", str(tmp_path / "runs"), "--json", str(tmp_path / "results.json")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| digit | energy AUPRC | PCA-50 AUPRC | train seconds |" in done.stdout
    assert "| mean |" in done.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    (run,) = results["runs"]
    assert (run["digit"], run["objective"], run["steps"]) == (3, "ddgm", 3)
    assert 0.0 <= run["energy"]["auprc"] <= 1.0 and 0.0 <= run["pca"]["auprc"] <= 1.0
    assert run["num_anomalous"] > 0 and (tmp_path / "runs" / "digit_3" / "config.json").exists()


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / "benchmarks" / "anomaly.py").is_file(),
                    reason="needs the source checkout")
def test_anomaly_benchmark_averages_seeds_per_task(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    script = str(ROOT / "benchmarks" / "anomaly.py")
    command = [sys.executable, script, "--sets", "breast_cancer", "--steps", "3",
               "--seed", "0", "1", "--jobs", "2", "--json", str(tmp_path / "rows.json")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert sorted(r["seed"] for r in rows) == [0, 1]
    assert [r["task"] for r in rows] == ["breast_cancer"] * 2
    assert rows[0]["num_train"] == rows[1]["num_train"] == 285
    # Each seed draws its own split, so the baselines differ between seeds.
    assert rows[0]["gaussian"]["auroc"] != rows[1]["gaussian"]["auroc"]
    reprinted = subprocess.run([sys.executable, script, "--from-json", str(tmp_path / "rows.json")],
                               capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert reprinted.returncode == 0, reprinted.stderr[-2000:]
    assert "seeds 0, 1" in reprinted.stdout
    auroc_table = reprinted.stdout.split("AUROC")[1].split("AUPRC")[0]
    (line,) = [l for l in auroc_table.splitlines() if l.startswith("| breast_cancer |")]
    assert "breast_cancer mean" not in auroc_table  # one task: no set mean beside it
    header = next(l for l in auroc_table.splitlines() if l.startswith("| task |"))
    cells = dict(zip((c.strip() for c in header.split("|")[2:-1]),
                     (c.strip() for c in line.split("|")[2:-1])))
    assert cells["gaussian"] == f"{np.mean([r['gaussian']['auroc'] for r in rows]):.3f}"
    # The preset's ensemble: each member's own AUROC is kept beside the ensemble's
    assert all(len(r["ebgen_members"]) == 3 for r in rows)
    assert "ensemble members alone, mean AUROC of the sets" in reprinted.stdout


@pytest.mark.skipif(not (ROOT / "benchmarks" / "anomaly.py").is_file(),
                    reason="needs the source checkout")
def test_anomaly_benchmark_holds_each_class_of_the_small_sets_out_in_turn() -> None:
    pytest.importorskip("sklearn")
    import importlib.util

    spec = importlib.util.spec_from_file_location("anomaly_benchmark",
                                                  ROOT / "benchmarks" / "anomaly.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found = module.tasks(["iris", "wine"], seed=0)
    assert [t["task"] for t in found] == ["iris/0", "iris/1", "iris/2",
                                          "wine/0", "wine/1", "wine/2"]
    iris_sizes = [(len(t["train"]), len(t["normal"]), len(t["anomalous"])) for t in found[:3]]
    assert iris_sizes == [(80, 20, 50)] * 3  # 80 % of the other two species, then the rest
    wine_dims = {t["train"].shape[1] for t in found[3:]}
    assert wine_dims == {13} and sum(len(t["anomalous"]) for t in found[3:]) == 178
    with pytest.raises(SystemExit, match="expected digits, breast_cancer, wine or iris"):
        module.tasks(["cifar"], seed=0)
