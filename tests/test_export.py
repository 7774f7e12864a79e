"""Tests of `ebgen export`: ONNX files checked against PyTorch, model.json, archives, refusals."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ebgen.checkpoint import load_checkpoint, save_checkpoint
from ebgen.cli.main import cli
from ebgen.presets import preset_config
from ebgen.errors import EbgenError
from ebgen.export import (HANDLER_FILES, build_archive, check_archive, check_parity,
                          export_model)
from ebgen.export.onnx_export import STACK_TRACE_KEY
from ebgen.latents import sample_latents
from ebgen.model_format import QUANTILE_LEVELS, read_model_info
from ebgen.models import build_models
from ebgen.names import (BATCH_AXIS, ENERGY_INPUT, ENERGY_ONNX, ENERGY_OUTPUT, GENERATOR_INPUT,
                         GENERATOR_ONNX, GENERATOR_OUTPUT, GENERATOR_UINT8_ONNX,
                         GENERATOR_UINT8_OUTPUT, GENERATOR_WEIGHTS, LATENT_POTENTIAL_ONNX,
                         MODEL_FILE, POTENTIAL_GRAD_OUTPUT, POTENTIAL_INPUT, POTENTIAL_OUTPUT)
from ebgen.pixels import unit_to_uint8
from ebgen.sessions import ort_session

RTOL, ATOL = 1e-3, 1e-4
MINIMAL_HANDLER = "def handle(data, context):\n    return [None] * len(data or [])\n"


def make_checkpoint(directory: Path, preset: str, **overrides) -> Path:
    """An untrained checkpoint with non-trivial batch-norm statistics (no training: fast)."""
    config = preset_config(preset, **overrides)
    torch.manual_seed(0)
    energy, generator = build_models(config.model)
    for bn in generator.batch_norms():
        bn.running_mean.normal_(0, 0.3)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.normal_(0, 0.2)
    save_checkpoint(directory, config, energy, generator, step=7)
    return directory


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {"tiny": make_checkpoint(root / "tiny", "tiny"),
            "toy2d": make_checkpoint(root / "toy2d", "toy2d", num_points=3000)}


@pytest.fixture(scope="module")
def exported(ckpts, tmp_path_factory):
    """The tiny checkpoint exported by the library (archives with a minimal handler), the
    toy2d one by the CLI with --json (archives asked for but the handler is missing)."""
    root = tmp_path_factory.mktemp("models")
    handler = root / "minimal_handler.py"
    handler.write_text(MINIMAL_HANDLER)
    tiny = export_model(ckpts["tiny"], root / "tiny", handler=handler, progress=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(HANDLER_FILES, "score", root / "no_such_handler.py")
        result = CliRunner().invoke(cli, ["export", str(ckpts["toy2d"]), "--out",
                                          str(root / "toy2d"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["kind"] == "points" and summary["archives"] == {}
    return {"tiny": tiny, "toy2d": Path(summary["model_dir"])}


def files_of(info: dict) -> dict[str, dict]:
    return {k: v for k, v in info["onnx"].items() if isinstance(v, dict) and "file" in v}


@pytest.mark.parametrize("kind", ["tiny", "toy2d"])
def test_files_exist_pass_checker_and_hashes_match(exported, kind):
    import onnx

    model_dir = exported[kind]
    info = read_model_info(model_dir)
    expected = {GENERATOR_ONNX, ENERGY_ONNX, LATENT_POTENTIAL_ONNX} | (
        {GENERATOR_UINT8_ONNX} if kind == "tiny" else set())
    assert {e["file"] for e in files_of(info).values()} == expected
    for entry in files_of(info).values():
        path = model_dir / entry["file"]
        onnx.checker.check_model(str(path), full_check=True)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        assert not list(model_dir.glob("*.data"))  # weights inside the files
        keys = {p.key for node in onnx.load(str(path)).graph.node for p in node.metadata_props}
        assert STACK_TRACE_KEY not in keys  # no paths of the exporting machine
    leftovers = [p.name for p in model_dir.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.parametrize("kind", ["tiny", "toy2d"])
def test_graph_names_and_named_dynamic_batch_axis(exported, kind):
    import onnx

    names = {GENERATOR_ONNX: ([GENERATOR_INPUT], [GENERATOR_OUTPUT]),
             GENERATOR_UINT8_ONNX: ([GENERATOR_INPUT], [GENERATOR_UINT8_OUTPUT]),
             ENERGY_ONNX: ([ENERGY_INPUT], [ENERGY_OUTPUT]),
             LATENT_POTENTIAL_ONNX: ([POTENTIAL_INPUT], [POTENTIAL_OUTPUT, POTENTIAL_GRAD_OUTPUT])}
    for path in exported[kind].glob("*.onnx"):
        graph = onnx.load(str(path)).graph
        assert ([i.name for i in graph.input], [o.name for o in graph.output]) == \
            names[path.name]
        for value in (*graph.input, *graph.output):
            assert value.type.tensor_type.shape.dim[0].dim_param == BATCH_AXIS


@pytest.mark.parametrize("kind", ["tiny", "toy2d"])
def test_fresh_sessions_match_pytorch_at_batch_1_7_64(ckpts, exported, kind):
    config, energy, generator, _ = load_checkpoint(ckpts[kind])
    model_dir, m = exported[kind], config.model
    for batch in (1, 7, 64):
        z = sample_latents(batch, m.z_dim, seed=100 + batch, distribution=m.latent)
        with torch.no_grad():
            x_ref = generator(torch.from_numpy(z)).numpy()
        x = ort_session(model_dir / GENERATOR_ONNX).run(None, {GENERATOR_INPUT: z})[0]
        np.testing.assert_allclose(x, x_ref, rtol=RTOL, atol=ATOL)
        probe = np.random.default_rng(batch).uniform(-1, 1, (batch, *m.sample_shape))
        probe = np.concatenate([probe.astype(np.float32), x_ref])
        with torch.no_grad():
            e_ref = energy(torch.from_numpy(probe)).numpy()
        e = ort_session(model_dir / ENERGY_ONNX).run(None, {ENERGY_INPUT: probe})[0]
        assert e.shape == (2 * batch,)
        np.testing.assert_allclose(e, e_ref, rtol=RTOL, atol=ATOL)
        if kind == "tiny":
            pixels = ort_session(model_dir / GENERATOR_UINT8_ONNX).run(
                None, {GENERATOR_INPUT: z})[0]
            assert pixels.dtype == np.uint8 and pixels.shape == x_ref.shape
            diff = np.abs(pixels.astype(int) - unit_to_uint8(x_ref).astype(int))
            assert diff.max() <= 1


def test_an_image_generator_with_latent_components_exports_and_matches(tmp_path):
    """Components on an image generator (a table lookup on z's first coordinate) survive the
    export: raw and uint8 generators match PyTorch on both sides of a component boundary."""
    ckpt = make_checkpoint(tmp_path / "ckpt", "tiny", num_components=4)
    model_dir = export_model(ckpt, tmp_path / "model", archive=False, progress=False)
    _, _, generator, _ = load_checkpoint(ckpt)
    z = sample_latents(7, 16, seed=3)
    z[:2, 0] = [-1e-3, 1e-3]  # either side of the boundary at u = 1/2
    with torch.no_grad():
        x_ref = generator(torch.from_numpy(z)).numpy()
    assert np.abs(x_ref[0] - x_ref[1]).max() > 1e-2
    x = ort_session(model_dir / GENERATOR_ONNX).run(None, {GENERATOR_INPUT: z})[0]
    np.testing.assert_allclose(x, x_ref, rtol=RTOL, atol=ATOL)
    pixels = ort_session(model_dir / GENERATOR_UINT8_ONNX).run(None, {GENERATOR_INPUT: z})[0]
    assert np.abs(pixels.astype(int) - unit_to_uint8(x_ref).astype(int)).max() <= 1


@pytest.mark.parametrize("kind", ["tiny", "toy2d"])
def test_model_json_fields(ckpts, exported, kind):
    info = read_model_info(exported[kind])
    config, *_ = load_checkpoint(ckpts[kind])
    assert info["name"] == kind and info["kind"] == config.model.kind
    assert info["sample_shape"] == list(config.model.sample_shape)
    assert info["latent"] == {"distribution": "uniform", "z_dim": config.model.z_dim}
    assert info["onnx"]["opset"] == 18 and info["onnx"]["batch_axis"] == BATCH_AXIS
    assert info["onnx"]["generator"] == {**info["onnx"]["generator"], "file": GENERATOR_ONNX,
                                         "input": GENERATOR_INPUT, "output": GENERATOR_OUTPUT}
    assert info["provenance"]["step"] == 7 and info["provenance"]["config"]["preset"] == kind
    assert {"ebgen_version", "torch_version", "onnx_version"} <= set(info["provenance"])
    for key, diffs in info["parity"].items():
        assert set(diffs) == {"1", "7", "64"} and max(diffs.values()) <= (1 if "uint8" in key
                                                                           else 1e-2)
    q = info["energy_quantiles"]
    assert q["levels"] == list(QUANTILE_LEVELS) and len(q["values"]) == len(QUANTILE_LEVELS)
    assert np.all(np.diff(q["values"]) >= 0) and q["source"] == "training data"
    if kind == "tiny":
        assert info["layout"] == "NCHW" and info["pixel_range"] == [-1.0, 1.0]
        assert info["channel_order"] == "L"
        assert info["archives"] == {"generate": "generate.mar", "score": "score.mar"}
    else:
        assert "layout" not in info and "skipped" in info["onnx"]["generator_uint8"]
        assert info["archives"] == {} and not list(exported[kind].glob("*.mar"))


def test_archives_of_export_and_build_archive(exported, tmp_path):
    model_dir = exported["tiny"]
    onnx_files = {GENERATOR_ONNX, GENERATOR_UINT8_ONNX, ENERGY_ONNX}
    for kind in ("generate", "score"):
        with zipfile.ZipFile(model_dir / f"{kind}.mar") as z:
            assert {"MAR-INF/MANIFEST.json", MODEL_FILE, *onnx_files} <= set(z.namelist())
            assert json.loads(z.read("MAR-INF/MANIFEST.json"))["model"]["modelName"] == kind
    handler = tmp_path / "my_handler.py"
    handler.write_text(MINIMAL_HANDLER)
    path = build_archive(model_dir, "score", handler, tmp_path / "mars")
    manifest = check_archive(path, [MODEL_FILE, *onnx_files, "my_handler.py"])
    assert manifest["model"]["handler"] == "my_handler.py" and path.name == "score.mar"
    real = check_archive(build_archive(model_dir, "generate", out_dir=tmp_path / "real"))
    assert real["model"]["handler"] == HANDLER_FILES["generate"].name  # ebgen.serve's entry
    with pytest.raises(EbgenError, match="not a Python file"):
        build_archive(model_dir, "score", tmp_path / "missing.py", tmp_path)
    with pytest.raises(EbgenError, match="unknown archive kind"):
        build_archive(model_dir, "train", handler, tmp_path)


def test_parity_check_names_file_and_error(exported, ckpts):
    _, _, generator, _ = load_checkpoint(ckpts["tiny"])
    with torch.no_grad():
        generator.net[-2].bias.add_(0.05)  # the last layer: outputs move by ~0.05 · tanh'
    latents = lambda n, seed: sample_latents(n, 16, seed)  # noqa: E731
    with pytest.raises(EbgenError, match=r"generator\.onnx .*batch 1: max \|diff\| "):
        check_parity(exported["tiny"] / GENERATOR_ONNX, generator, latents)


def _invoke(*args):
    return CliRunner().invoke(cli, ["export", *map(str, args)])


def test_refuses_non_empty_out_without_force(ckpts, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = _invoke(ckpts["tiny"], "--out", out)
    assert result.exit_code == 2 and "not empty" in result.output
    assert "Traceback" not in result.output
    result = _invoke(ckpts["tiny"], "--out", out, "--force")  # not a model dir: kept
    assert result.exit_code == 2 and "not an ebgen model directory" in result.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_refuses_unknown_format_version(ckpts, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(ckpts["tiny"], ckpt)
    meta = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**meta, "format_version": 99}))
    result = _invoke(ckpt, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "format version 99" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_refuses_missing_weights(ckpts, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(ckpts["tiny"], ckpt)
    (ckpt / GENERATOR_WEIGHTS).unlink()
    result = _invoke(ckpt, "--out", tmp_path / "out")
    assert result.exit_code == 2 and f"missing {GENERATOR_WEIGHTS}" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_failed_export_leaves_nothing(ckpts, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise EbgenError("simulated exporter failure")

    monkeypatch.setattr("ebgen.export.model_dir.energy_quantiles", fail)
    monkeypatch.setattr("ebgen.export.model_dir.export_onnx",
                        lambda module, example, path, *a: Path(path).write_bytes(b"") or fail())
    with pytest.raises(EbgenError, match="simulated"):
        export_model(ckpts["tiny"], tmp_path / "out", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_the_next_export_removes_what_a_killed_one_left(ckpts, tmp_path):
    """A kill -9 mid-export leaves its temporary folder; the next export to the same place
    removes it (named after a process that no longer runs), and never a live export's."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    abandoned = tmp_path / f".out.{dead.pid}.abc123.tmp"
    abandoned.mkdir()
    (abandoned / "generator.onnx").write_bytes(b"half")
    live = tmp_path / f".out.{os.getpid()}.def456.tmp"
    live.mkdir()
    export_model(ckpts["tiny"], tmp_path / "out", progress=False, archive=False)
    assert not abandoned.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", live.name])
