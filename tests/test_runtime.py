"""Tests of the onnxruntime inference core: `ebgen.load_model`, generate, score, percentiles."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ebgen.checkpoint import load_checkpoint, save_checkpoint
from ebgen.presets import preset_config
from ebgen.errors import EbgenError
from ebgen.latents import sample_latents
from ebgen.models import build_models
from ebgen.names import MODEL_FILE
from ebgen.pixels import unit_to_uint8
from ebgen import load_model, resolve_model_path
from ebgen.export.cache import cache_dir
from ebgen.runtime import CHUNK

RTOL, ATOL = 1e-3, 1e-4


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """An untrained tiny checkpoint with non-trivial batch-norm statistics."""
    config = preset_config("tiny")
    torch.manual_seed(1)
    energy, generator = build_models(config.model)
    for bn in generator.batch_norms():
        bn.running_mean.normal_(0, 0.3)
        bn.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_checkpoint(path, config, energy, generator, step=3)
    return path


@pytest.fixture(scope="module")
def model_dir(ckpt, tmp_path_factory):
    """The checkpoint exported through `resolve_model_path` into a private cache folder."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EBGEN_CACHE_DIR", str(cache))
        path = resolve_model_path(ckpt)
        assert path.parent == cache and (path / MODEL_FILE).is_file()
        written = (path / MODEL_FILE).stat().st_mtime_ns
        assert resolve_model_path(str(ckpt)) == path  # cached: no second export
        assert (path / MODEL_FILE).stat().st_mtime_ns == written
    assert resolve_model_path(path) == path and not list(path.glob("*.mar"))
    return path


@pytest.fixture(scope="module")
def model(model_dir):
    return load_model(model_dir, device="cpu")


def test_load_model_without_torch_matches_pytorch(ckpt, model_dir, tmp_path):
    code = ("import sys, numpy as np, ebgen\n"
            f"m = ebgen.load_model({str(model_dir)!r})\n"
            "x = m.generate(16, seed=0)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            f"np.save({str(tmp_path / 'x.npy')!r}, x)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    x = np.load(tmp_path / "x.npy")
    config, _, generator, _ = load_checkpoint(ckpt)
    z = sample_latents(16, config.model.z_dim, seed=0, distribution=config.model.latent)
    with torch.no_grad():
        np.testing.assert_allclose(x, generator(torch.from_numpy(z)).numpy(), rtol=RTOL,
                                   atol=ATOL)


def test_attributes(model, model_dir):
    assert model.info["name"] == "tiny" and model.directory == model_dir
    assert model.sample_shape == (1, 8, 8) and model.z_dim == 16 and model.kind == "image"
    assert "CPUExecutionProvider" in model.providers
    assert model.providers == ["CPUExecutionProvider"]  # device="cpu"


def test_generate_seeded_chunked_and_uint8(model):
    x = model.generate(CHUNK + 9, seed=5)
    assert x.shape == (CHUNK + 9, 1, 8, 8) and x.dtype == np.float32
    assert -1 <= x.min() and x.max() <= 1
    np.testing.assert_array_equal(model.generate(CHUNK + 9, seed=5), x)
    np.testing.assert_allclose(model.generate(4, seed=5), x[:4], rtol=0, atol=1e-6)
    assert not np.allclose(model.generate(4, seed=6), x[:4])
    np.testing.assert_array_equal(model.generate_uint8(4, seed=5), unit_to_uint8(x[:4]))
    assert model.generate(0).shape == (0, 1, 8, 8)
    with pytest.raises(EbgenError, match=r"num_samples=-1 is out of range"):
        model.generate(-1)
    np.testing.assert_array_equal(model.generate(np.int64(3), seed=np.uint32(5)), x[:3])


def test_energy_and_score_match_pytorch(model, ckpt):
    _, energy, _, _ = load_checkpoint(ckpt)
    x = np.concatenate([model.generate(CHUNK + 3, seed=1),
                        np.random.default_rng(0).uniform(-1, 1, (5, 1, 8, 8)).astype(np.float32)])
    e = model.energy(x)
    assert e.shape == (len(x),) and e.dtype == np.float32
    with torch.no_grad():
        np.testing.assert_allclose(e, energy(torch.from_numpy(x)).numpy(), rtol=RTOL, atol=ATOL)
    s = model.score(x[:10])
    assert set(s) == {"energy", "log_density", "percentile"}
    np.testing.assert_array_equal(s["log_density"], -s["energy"])
    np.testing.assert_array_equal(s["percentile"], model.percentile(s["energy"]))
    assert model.energy(x[0]).shape == (1,)
    pixels = unit_to_uint8(x[:3])
    np.testing.assert_allclose(model.energy(pixels), model.energy(pixels / 127.5 - 1.0),
                               rtol=1e-5, atol=1e-4)
    with pytest.raises(EbgenError, match=r"RGB input \(3 channels\) to a grey model"):
        model.energy(np.zeros((2, 3, 8, 8), np.float32))


def test_percentile_monotone_within_0_100(model):
    q = model.info["energy_quantiles"]
    values, levels = np.array(q["values"]), 100 * np.array(q["levels"])
    span = values[-1] - values[0]
    e = np.linspace(values[0] - 2 * span, values[-1] + 2 * span, 2001)
    p = model.percentile(e)
    assert np.all(np.diff(p) >= 0) and p.min() == 0 and p.max() == 100
    np.testing.assert_allclose(model.percentile(values), levels, atol=1e-9)
    assert np.isnan(model.percentile(np.array([np.nan]))[0])
    typical = model.percentile(values[9])  # the median energy of the training data
    assert abs(float(typical) - 50) < 1e-6


def test_device_cuda_refused_when_unavailable(model_dir):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(EbgenError, match="CUDA"):
        load_model(model_dir, device="cuda")
    with pytest.raises(EbgenError, match="unknown device"):
        load_model(model_dir, device="tpu")
    assert "CPUExecutionProvider" in load_model(model_dir).providers  # auto


def test_resolve_model_path_refusals(tmp_path, monkeypatch):
    monkeypatch.setenv("EBGEN_CACHE_DIR", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    with pytest.raises(EbgenError, match="model directory .* checkpoint directory .* bundled"):
        resolve_model_path("no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EbgenError, match="not a model"):
        load_model(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / MODEL_FILE).write_text(json.dumps({"format": "ebgen-model", "format_version": 99}))
    with pytest.raises(EbgenError, match="format version 99"):
        load_model(bad)


def test_a_folder_named_like_a_bundled_model_does_not_hide_it(tmp_path, monkeypatch):
    from ebgen.bundled import bundled_model_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ring").mkdir()  # e.g. where a user keeps their ring experiments
    assert resolve_model_path("ring") == bundled_model_path("ring")
    with pytest.raises(EbgenError, match="not a model"):
        resolve_model_path("./ring")  # the folder itself, asked for explicitly


def test_model_files_are_confined_to_the_directory_and_hash_checked(model_dir, tmp_path):
    import shutil

    from ebgen.export import build_archive

    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    info = json.loads((copy / MODEL_FILE).read_text())
    outside = tmp_path / "secret.txt"
    outside.write_text("not for an archive")
    info["onnx"]["energy"]["file"] = str(outside)   # an absolute path
    (copy / MODEL_FILE).write_text(json.dumps(info))
    for attempt in (lambda: load_model(copy), lambda: build_archive(copy, "score")):
        with pytest.raises(EbgenError, match="plain names inside the model directory"):
            attempt()
    info["onnx"]["energy"]["file"] = "../secret.txt"
    (copy / MODEL_FILE).write_text(json.dumps(info))
    with pytest.raises(EbgenError, match="plain names"):
        load_model(copy)
    info["onnx"]["energy"]["file"] = "energy.onnx"
    (copy / MODEL_FILE).write_text(json.dumps(info))
    data = bytearray((copy / "energy.onnx").read_bytes())
    data[-1] ^= 1
    (copy / "energy.onnx").write_bytes(bytes(data))
    with pytest.raises(EbgenError, match="does not match the sha256"):
        load_model(copy)


BAD_IMAGES = {"nan": np.full((2, 1, 8, 8), np.nan, np.float32),
              "beyond [-1, 1]": np.full((2, 1, 8, 8), 5.0, np.float32),
              "int64 pixels": np.zeros((2, 1, 8, 8), np.int64),
              "wrong size": np.zeros((2, 1, 9, 8), np.float32),
              "empty": np.zeros((0, 1, 8, 8), np.float32),
              "strings": np.array([["a"]])}


@pytest.mark.parametrize("case", BAD_IMAGES)
def test_python_api_refuses_what_the_servers_refuse_with_their_message(model, case):
    from ebgen.serve.validation import RequestError, check_samples

    with pytest.raises(RequestError) as served:
        check_samples(BAD_IMAGES[case], model.sample_shape)
    for call in (model.energy, model.score):
        with pytest.raises(RequestError) as local:
            call(BAD_IMAGES[case])
        assert local.value.reason == served.value.reason and local.value.status == 422


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_samples=2, seed=-1), "seed=-1 is out of range: expected 0..9223372036854775807"),
    (dict(num_samples=2.5), "num_samples must be an integer, got 2.5"),
    (dict(num_samples=True), "num_samples must be an integer, got true"),
    (dict(num_samples=2, seed="x"), 'seed must be an integer, got "x"')])
def test_generate_arguments_are_checked_as_the_servers_check_them(model, kwargs, message):
    from ebgen.serve.validation import Limits, RequestError, check_generate

    with pytest.raises(RequestError, match=message):
        model.generate(**kwargs)
    with pytest.raises(RequestError, match=message):
        check_generate(kwargs, Limits())
