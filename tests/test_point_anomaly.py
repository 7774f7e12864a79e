"""Feature vectors of any dimension: the point anomaly report, and a D-dimensional model end to
end (train infers D from the file, eval --anomaly, export, score, generate)."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from ebgen.cli.main import cli
from ebgen.errors import EbgenError
from ebgen.metrics.point_anomaly import GaussianBaseline, point_anomaly_report


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def correlated(n, dim=4, seed=0):
    """Points near a 1-D line in `dim` dimensions, far from the origin."""
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(n, 1))
    return t * np.arange(1, dim + 1) + 0.05 * rng.normal(size=(n, dim)) + 50.0


def test_gaussian_baseline_is_the_mahalanobis_distance():
    x = correlated(4000)
    baseline = GaussianBaseline().fit(x)
    centred = x[:5] - x.mean(0)
    want = np.einsum("ij,jk,ik->i", centred, np.linalg.inv(np.cov(x, rowvar=False)), centred)
    np.testing.assert_allclose(baseline.score(x[:5]), want, rtol=1e-2)  # the ridge
    with pytest.raises(EbgenError, match="not fitted"):
        GaussianBaseline().score(x)
    with pytest.raises(EbgenError, match="3 columns, fitted on 4"):
        baseline.score(x[:, :3])


def test_report_tells_a_good_score_from_a_useless_one():
    train, heldout = correlated(3000, seed=1), correlated(1000, seed=2)
    baseline = GaussianBaseline().fit(train)
    good = point_anomaly_report(baseline.score, train, heldout, seed=0)
    assert set(good["energy"]) == {"uniform", "shuffled", "noisy"}
    assert min(good["energy"].values()) > 0.95
    assert good["energy"] == pytest.approx(good["gaussian"], abs=1e-4)
    useless = point_anomaly_report(lambda x: np.zeros(len(x)), train, heldout, seed=0)
    assert set(useless["energy"].values()) == {0.5}
    again = point_anomaly_report(lambda x: np.zeros(len(x)), train, heldout, seed=0)
    assert again == useless


def test_one_dimensional_data_has_no_shuffled_corruption():
    x = np.random.default_rng(0).normal(size=(500, 1))
    report = point_anomaly_report(lambda p: p[:, 0] ** 2, x, x[:200])
    assert set(report["energy"]) == {"uniform", "noisy"}


@pytest.mark.slow
def test_a_5d_feature_file_trains_evaluates_exports_and_scores(tmp_path):
    data = tmp_path / "features.npy"
    np.save(data, correlated(2000, dim=5).astype(np.float32))
    small = ["--steps", "20", "--energy-width", "32", "--generator-width", "32",
             "--num-experts", "16", "--batch-size", "64"]
    wrong = run("train", "--preset", "tabular", "--data", data, "--data-dim", "3",
                "--out", tmp_path / "wrong", *small)
    assert wrong.exit_code == 2 and "holds 5-D points but data_dim is 3" in wrong.output
    result = run("train", "--preset", "tabular", "--data", data, "--out", tmp_path / "run",
                 *small)
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["data_dim"] == 5
    report = json.loads(run("eval", tmp_path / "run", "--anomaly", "--num-samples", "500",
                            "--json").output)
    assert report["dataset"] == str(data) and "kl_data_energy" not in report
    assert set(report["anomaly"]["gaussian"]) == {"uniform", "shuffled", "noisy"}
    assert np.isfinite(report["energy_heldout_mean"]) and "recall_ratio" in report["generator"]
    assert run("export", tmp_path / "run", "--out", tmp_path / "model").exit_code == 0
    np.save(tmp_path / "query.npy", correlated(3, dim=5).astype(np.float32))
    scored = json.loads(run("score", tmp_path / "model", tmp_path / "query.npy",
                            "--json").output)
    assert len(scored["results"]) == 3
    assert run("generate", tmp_path / "model", "-n", "4", "--format", "npy",
               "--out", tmp_path / "g.npy").exit_code == 0
    assert np.load(tmp_path / "g.npy").shape == (4, 5)
