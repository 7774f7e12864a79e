"""Colour images end to end: a tiny generated RGB image folder trains, exports, serves and
evals through the command line, and eval judges the samples by distribution in the PCA space
of the training images (the bundled classifier reads grey digits only)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import http_service
from ebgen.cli.main import cli
from ebgen.serve import codecs

httpx = pytest.importorskip("httpx")
pytestmark = pytest.mark.slow
#: Three hues of bars and blocks on black, 8×8.
HUES = np.array([[230, 40, 40], [40, 200, 60], [50, 80, 240]], dtype=np.uint8)


def run(*args) -> "CliRunner.invoke":
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _colour_images(n: int, seed: int = 0) -> np.ndarray:
    """`n` RGB uint8 (3, 8, 8) images: a coloured rectangle of random place and size."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 3, 8, 8), dtype=np.uint8)
    for image in images:
        top, left = rng.integers(0, 5, size=2)
        height, width = rng.integers(2, 5, size=2)
        image[:, top:top + height, left:left + width] = HUES[rng.integers(3)][:, None, None]
    return images


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("colour")
    folder = root / "images"
    folder.mkdir()
    for i, image in enumerate(_colour_images(160)):
        (folder / f"im_{i:03d}.png").write_bytes(codecs.encode_png(image))
    trained = run("train", "--preset", "tiny", "--data", folder, "--channels", 3,
                  "--image-size", 8, "--steps", 40, "--quiet", "--out", root / "run")
    assert trained.exit_code == 0, trained.output
    exported = run("export", root / "run", "--out", root / "model", "--no-archive")
    assert exported.exit_code == 0, exported.output
    return folder, root / "model"


def test_a_colour_model_exports_rgb_and_generates_rgb(colour_model, tmp_path):
    _, model_dir = colour_model
    info = json.loads((model_dir / "model.json").read_text())
    assert info["sample_shape"] == [3, 8, 8] and info["channel_order"] == "RGB"
    result = run("generate", model_dir, "-n", 3, "--seed", 1, "--out", tmp_path / "pngs")
    assert result.exit_code == 0, result.output
    for path in sorted((tmp_path / "pngs").glob("*.png")):
        assert codecs.decode_payload(path.read_bytes()).shape == (3, 8, 8)


def test_eval_reports_distribution_metrics_in_pca_features(colour_model):
    folder, model_dir = colour_model
    result = run("eval", model_dir, "--data", folder, "--num-samples", 400, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["kind"] == "image" and report["feature_space"].startswith("PCA-")
    generator = report["generator"]
    assert generator["mmd2_ratio"] > 0 and np.isfinite(generator["mmd2_ratio"])
    assert 0 <= generator["precision"] <= 1 and 0 <= generator["recall"] <= 1
    assert report["frechet_distance_pca"] >= 0


def test_the_http_service_generates_and_scores_colour(colour_model, tmp_path):
    folder, model_dir = colour_model
    with http_service(model_dir, tmp_path / "serve.log") as url:
        png = httpx.post(f"http://{url}/generate", json={"num_samples": 1, "seed": 3},
                         timeout=30)
        assert png.status_code == 200
        assert codecs.decode_payload(png.content).shape == (3, 8, 8)
        body = (folder / "im_000.png").read_bytes()
        scored = httpx.post(f"http://{url}/score", content=body,
                            headers={"Content-Type": "image/png"}, timeout=30)
        assert scored.status_code == 200, scored.text
        assert np.isfinite(scored.json()["energy"][0])
        grey = codecs.encode_png(np.zeros((1, 8, 8), np.uint8))  # a colour model wants colour
        refused = httpx.post(f"http://{url}/score", content=grey,
                             headers={"Content-Type": "image/png"}, timeout=30)
        assert refused.status_code == 422 and "channel" in refused.text
