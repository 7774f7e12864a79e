"""Calibrated anomaly decisions: the fitted threshold and tail, `ebgen calibrate`, and the
decision on every front door (Python, CLI, HTTP REST and v2, TorchServe), plus the
scikit-learn-style `EnergyDetector`."""
from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import http_service, torchserve_config
from ebgen.calibration import (MIN_SAMPLES, fit_calibration, read_calibration,
                               write_calibration)
from ebgen.cli.main import cli
from ebgen.errors import CheckpointError, EbgenError

CLEAN = 400


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_threshold_flags_the_false_positive_rate_of_fresh_clean_data():
    rng = np.random.default_rng(0)
    for fpr in (0.2, 0.05, 0.01, 0.001):
        calibration = fit_calibration(rng.exponential(size=20_000), fpr=fpr)
        fresh = rng.exponential(size=200_000)
        flagged = calibration.is_anomaly(fresh).mean()
        assert flagged == pytest.approx(fpr, rel=0.25), (fpr, flagged)
        assert np.mean(calibration.survival(fresh) < fpr) == pytest.approx(flagged, abs=1e-3)
    # an exponential tail is exact for exponential energies: 0.1 % lies beyond log(1000)
    assert calibration.threshold == pytest.approx(np.log(1000), abs=0.3)


def test_tail_probability_keeps_ranking_past_the_clean_extremes():
    energies = np.random.default_rng(1).normal(size=2000)
    calibration = fit_calibration(energies, fpr=0.01)
    far = np.array([energies.max(), energies.max() + 1, energies.max() + 5, 1e3])
    p = calibration.survival(far)
    assert np.all(np.diff(p) < 0) and p[-2] > 0
    grid = np.linspace(energies.min() - 3, energies.max() + 3, 5000)
    s = calibration.survival(grid)
    assert np.all(np.diff(s) <= 0) and s[0] == 1.0 and np.all(s > 0)
    assert calibration.survival(np.median(energies)) == pytest.approx(0.5, abs=0.01)
    assert np.isnan(calibration.survival(np.nan))


def test_bad_calibration_inputs_and_files(tmp_path):
    with pytest.raises(EbgenError, match=f"at least {MIN_SAMPLES} clean samples"):
        fit_calibration(np.zeros(MIN_SAMPLES - 1))
    with pytest.raises(EbgenError, match="finite"):
        fit_calibration(np.r_[np.zeros(100), np.nan])
    with pytest.raises(EbgenError, match=r"fpr must be in \(0, 1\)"):
        fit_calibration(np.zeros(100), fpr=1.0)
    assert read_calibration(tmp_path) is None
    calibration = fit_calibration(np.arange(100.0), fpr=0.1, source="clean.npy")
    path = write_calibration(tmp_path, calibration)
    assert read_calibration(tmp_path) == calibration
    path.write_text(json.dumps({**json.loads(path.read_text()), "format_version": 9}))
    with pytest.raises(CheckpointError, match="calibrate again"):
        read_calibration(tmp_path)
    path.write_text("{")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_calibration(tmp_path)


@pytest.fixture(scope="module")
def calibrated(tiny_model_dir, tmp_path_factory):
    """`ebgen calibrate` of a copy of the tiny model on its own samples (clean by
    construction), at fpr 0.05; returns (model directory, the clean samples)."""
    from ebgen import load_model

    tmp = tmp_path_factory.mktemp("calibrated")
    clean = load_model(tiny_model_dir, "cpu").generate(CLEAN, seed=123)
    np.save(tmp / "clean.npy", clean)
    refused = run("calibrate", tiny_model_dir / "nope", tmp / "clean.npy")
    assert refused.exit_code == 2
    result = run("calibrate", tiny_model_dir, tmp / "clean.npy", "--fpr", "0.05",
                 "--out", tmp / "model", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["num_samples"] == CLEAN and report["flagged"] == pytest.approx(0.05, abs=0.01)
    assert not (tiny_model_dir / "calibration.json").exists()  # the original is untouched
    return tmp / "model", clean


def test_python_and_cli_scores_carry_the_decision(calibrated):
    from ebgen import load_model

    directory, clean = calibrated
    model = load_model(directory, "cpu")
    noise = np.random.default_rng(0).uniform(-1, 1, (50, *model.sample_shape)).astype(np.float32)
    s = model.score(np.concatenate([clean[:50], noise]))
    assert list(s) == ["energy", "log_density", "percentile", "tail_probability", "is_anomaly"]
    assert s["is_anomaly"].dtype == bool
    np.testing.assert_array_equal(s["is_anomaly"], s["energy"] > model.calibration.threshold)
    assert s["is_anomaly"][:50].mean() < 0.2
    assert s["tail_probability"][50:].mean() < s["tail_probability"][:50].mean()
    np.save(directory.parent / "two.npy", clean[:2])
    rows = json.loads(run("score", directory, directory.parent / "two.npy", "--json").output)
    assert [r["is_anomaly"] for r in rows["results"]] == list(s["is_anomaly"][:2])
    text = run("score", directory, directory.parent / "two.npy").output
    assert "tail" in text and ("normal" in text or "anomaly" in text)


def test_http_rest_and_v2_answer_the_decision(calibrated, tmp_path):
    import httpx

    from ebgen import load_model
    from ebgen.serve import codecs

    directory, clean = calibrated
    want = load_model(directory, "cpu").score(clean[:5])
    with http_service(directory, tmp_path / "serve.log") as host:
        rest = httpx.post(f"http://{host}/score", content=codecs.encode_npy(clean[:5]),
                          headers={"content-type": "application/octet-stream"}).json()
        meta = httpx.get(f"http://{host}/v2/models/energy").json()
        v2 = httpx.post(f"http://{host}/v2/models/energy/infer", json={"inputs": [{
            "name": "x", "shape": list(clean[:5].shape), "datatype": "FP32",
            "data": clean[:5].ravel().tolist()}]}).json()
        metrics = httpx.get(f"http://{host}/metrics").text
    assert rest["is_anomaly"] == want["is_anomaly"].tolist()
    np.testing.assert_allclose(rest["tail_probability"], want["tail_probability"], rtol=1e-6)
    types = {o["name"]: o["datatype"] for o in meta["outputs"]}
    assert types["tail_probability"] == "FP64" and types["is_anomaly"] == "BOOL"
    out = {o["name"]: o for o in v2["outputs"]}
    assert out["is_anomaly"]["datatype"] == "BOOL"
    assert out["is_anomaly"]["data"] == want["is_anomaly"].tolist()
    # drift: both requests' 10 energies, in buckets at the training energy quantiles
    assert "ebgen_score_energy_count 10.0" in metrics
    assert 'ebgen_score_tail_probability_bucket{le="1.0"} 10.0' in metrics
    flagged = float(np.sum(want["is_anomaly"]) * 2)
    assert f"ebgen_score_anomalies_total {flagged}" in metrics


@pytest.mark.torchserve
@pytest.mark.skipif(shutil.which("java") is None, reason="needs Java 17")
def test_torchserve_archive_carries_the_calibration(calibrated, tmp_path):
    pytest.importorskip("ts")
    import httpx

    from ebgen import load_model
    from ebgen.serve import codecs
    from ebgen.serve.torchserve import TorchServe

    directory, clean = calibrated
    if not (directory / "score.mar").exists():
        pytest.skip("the tiny model was exported without archives")
    assert "calibration.json" in zipfile.ZipFile(directory / "score.mar").namelist()
    cfg = torchserve_config(directory, tmp_path / "ts")
    with TorchServe(cfg) as server:
        server.wait_ready(150)
        answer = httpx.post(server.url("score"), content=codecs.encode_npy(clean[:4]),
                            headers={**server.auth_headers(),
                                     "content-type": "application/octet-stream"},
                            timeout=60).json()
    assert answer["is_anomaly"] == load_model(directory, "cpu").score(clean[:4])[
        "is_anomaly"].tolist()


def test_energy_detector_with_a_model_follows_scikit_learn_conventions(calibrated, tmp_path):
    from ebgen import EnergyDetector, load_model

    directory, clean = calibrated
    detector = EnergyDetector(model=directory, fpr=0.05, out=tmp_path / "det")
    with pytest.raises(EbgenError, match="not fitted"):
        detector.predict(clean)
    assert detector.fit(clean) is detector
    noise = np.random.default_rng(0).uniform(-1, 1, (50, *clean.shape[1:])).astype(np.float32)
    x = np.concatenate([clean[:50], noise])
    energy = load_model(directory, "cpu").energy(x)
    np.testing.assert_allclose(detector.score_samples(x), -energy, rtol=1e-6)
    np.testing.assert_array_equal(detector.predict(x),
                                  np.where(energy > detector.threshold_, -1, 1))
    assert np.all((detector.decision_function(x) < 0) == (detector.predict(x) == -1))
    assert detector.get_params()["fpr"] == 0.05
    assert detector.set_params(fpr=0.1).fpr == 0.1


@pytest.mark.slow
def test_energy_detector_trains_on_feature_vectors(tmp_path):
    from ebgen import EnergyDetector

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1200, 3)) * [1.0, 2.0, 0.5] + [10.0, -5.0, 0.0]
    detector = EnergyDetector(steps=30, energy_width=32, generator_width=32, num_experts=16,
                              batch_size=64, out=tmp_path / "det").fit(x)
    assert (tmp_path / "det" / "model" / "calibration.json").is_file()
    assert detector.predict(x[:10]).shape == (10,)
    assert set(np.unique(detector.fit_predict(x))) <= {-1, 1}
