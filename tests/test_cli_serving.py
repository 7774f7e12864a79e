"""`ebgen generate`, `ebgen score` and `ebgen serve`'s options, in process (CliRunner)."""
from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from ebgen.cli.main import cli
from ebgen.images import tile_images
from ebgen.serve import codecs


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_generate_pngs_grid_and_npy_match_the_runtime(tiny_model_dir, model, tmp_path):
    r = run("generate", tiny_model_dir, "-n", 3, "--seed", 4, "--out", tmp_path / "pngs")
    assert r.exit_code == 0, r.output
    files = sorted((tmp_path / "pngs").glob("*.png"))
    assert [f.name for f in files] == ["sample_0.png", "sample_1.png", "sample_2.png"]
    for f, want in zip(files, model.generate_uint8(3, 4)):
        np.testing.assert_array_equal(codecs.decode_payload(f.read_bytes()), want)
    assert run("generate", tiny_model_dir, "-n", 4, "--out", tmp_path / "g", "--grid"
               ).exit_code == 0
    grid = (tmp_path / "g" / "grid.png").read_bytes()
    np.testing.assert_array_equal(codecs.decode_payload(grid),
                                  tile_images(model.generate_uint8(4, 0)))
    assert run("generate", tiny_model_dir, "-n", 5, "--seed", 2, "--out", tmp_path / "s.npy"
               ).exit_code == 0
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), model.generate(5, 2))
    bad = run("generate", tiny_model_dir, "--out", tmp_path / "x.png", "--format", "npy")
    assert bad.exit_code == 2 and "does not match" in bad.output


def test_generate_from_a_checkpoint_directory(tiny_checkpoint, model, tmp_path, monkeypatch):
    monkeypatch.setenv("EBGEN_CACHE_DIR", str(tmp_path / "cache"))
    r = run("generate", tiny_checkpoint, "-n", 2, "--seed", 1, "--out", tmp_path / "a.npy")
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), model.generate(2, 1), atol=1e-5)


def test_score_files_folders_globs_and_json(tiny_model_dir, model, mnist_digits, tmp_path):
    folder = tmp_path / "digits"
    folder.mkdir()
    for i, d in enumerate(mnist_digits[:3]):
        (folder / f"d{i}.png").write_bytes(codecs.encode_png(d))
    x = model.generate(2, 6)
    np.save(tmp_path / "batch.npy", x)
    r = run("score", tiny_model_dir, folder, tmp_path / "*.npy", "--quiet")
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 5 and "d0.png" in lines[0] and "batch.npy[1]" in lines[4]
    assert "energy" in lines[0] and "percentile" in lines[0]
    r = run("score", tiny_model_dir, folder / "d1.png", tmp_path / "batch.npy", "--json")
    rows = json.loads(r.output)["results"]
    want = model.score(mnist_digits[1:2])
    np.testing.assert_allclose(rows[0]["energy"], want["energy"][0], rtol=1e-6)
    np.testing.assert_allclose([row["energy"] for row in rows[1:]], model.energy(x), rtol=1e-6)
    assert rows[1]["index"] == 0 and rows[0]["index"] is None


def test_score_names_an_unreadable_file_with_exit_2(tiny_model_dir, tmp_path):
    good, bad = tmp_path / "good.png", tmp_path / "broken.png"
    good.write_bytes(codecs.encode_png(np.zeros((1, 8, 8), np.uint8)))
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    r = run("score", tiny_model_dir, good, bad)
    assert r.exit_code == 2 and "broken.png" in r.output and "Traceback" not in r.output
    r = run("score", tiny_model_dir, tmp_path / "missing.png")
    assert r.exit_code == 2 and "missing.png" in r.output
    rgb = tmp_path / "rgb.png"
    rgb.write_bytes(codecs.encode_png(np.zeros((3, 8, 8), np.uint8)))
    r = run("score", tiny_model_dir, rgb)
    assert r.exit_code == 2 and "rgb.png" in r.output and "channel" in r.output


def test_serve_help_and_usage_errors(tiny_model_dir):
    help_text = run("serve", "--help").output
    for word in ("--engine", "--no-auth", "--max-batch-size", "Examples", "127.0.0.1"):
        assert word in help_text
    for args in (("--no-auth",), ("--workers", "0")):
        r = run("serve", tiny_model_dir, *args)
        assert r.exit_code == 2 and "Error" in r.output
    assert run("serve", "/no/such/model").exit_code == 2
