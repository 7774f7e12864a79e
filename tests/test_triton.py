"""`ebgen export --format triton`: each config.pbtxt parsed with Triton's own protobuf
definitions (the `tritonclient[grpc]` package ships them) and checked against the ONNX files in
the repository; the same tensors sent with `tritonclient.http` to ebgen's v2 service give what
the repository's ONNX files give in onnxruntime (the runtime of Triton's onnxruntime backend)."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest

from click.testing import CliRunner

from conftest import http_service

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
triton = pytest.importorskip("tritonclient.http")
text_format = pytest.importorskip("google.protobuf.text_format")

from ebgen.bundled import bundled_model_path  # noqa: E402
from ebgen.cli.main import cli  # noqa: E402
from ebgen.errors import EbgenError  # noqa: E402
from ebgen.export.triton import (TritonOptions, check_against_onnx, parse_instances,  # noqa: E402
                                 repository_configs, write_triton_repository)
from ebgen.model_format import read_model_info  # noqa: E402

DTYPE = model_config_pb2.DataType
KIND = model_config_pb2.ModelInstanceGroup.Kind


def run_cli(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def _configs(repository):
    return {path.parent.name: text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
            for path in sorted(repository.glob("*/config.pbtxt"))}


def _session(repository, name):
    return onnxruntime.InferenceSession(str(repository / name / "1" / "model.onnx"),
                                        providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def repositories(tiny_model_dir, tmp_path_factory):
    """Triton repositories of the tiny image model and the bundled ring (points)."""
    root = tmp_path_factory.mktemp("triton")
    result = run_cli(["export", str(tiny_model_dir), "--format", "triton", "--out",
                      str(root / "tiny"), "--instances", "cpu:2", "--threads", "1", "--json"])
    assert json.loads(result.stdout)["models"] == ["energy", "generator", "generator_energy"]
    ring = bundled_model_path("ring")
    write_triton_repository(ring, root / "ring", TritonOptions(max_batch_size=64))
    return {"tiny": (tiny_model_dir, root / "tiny"), "ring": (ring, root / "ring")}


@pytest.mark.parametrize("which", ["tiny", "ring"])
def test_every_config_parses_as_triton_model_config_and_matches_its_onnx(repositories, which):
    model_dir, repository = repositories[which]
    info = read_model_info(model_dir)
    configs = _configs(repository)
    assert sorted(configs) == ["energy", "generator", "generator_energy"]
    for name in ("generator", "energy"):
        config, session = configs[name], _session(repository, name)
        assert config.name == name and config.backend == "onnxruntime"
        assert config.HasField("dynamic_batching") and config.max_batch_size >= 1
        for declared, actual in ((config.input, session.get_inputs()),
                                 (config.output, session.get_outputs())):
            assert [t.name for t in declared] == [a.name for a in actual]
            for tensor, arg in zip(declared, actual):
                assert tensor.data_type == DTYPE.Value("TYPE_FP32")
                assert isinstance(arg.shape[0], str)  # the named dynamic batch axis
                shape = tensor.reshape.shape if tensor.HasField("reshape") else tensor.dims
                dims = list(shape)
                assert dims == list(arg.shape[1:])
    assert list(configs["generator"].input[0].dims) == [info["latent"]["z_dim"]]
    assert list(configs["energy"].input[0].dims) == info["sample_shape"]
    ensemble = configs["generator_energy"]
    assert ensemble.platform == "ensemble"
    produced = {t.name for t in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:  # each step reads what is already there
        model = configs[step.model_name]
        assert set(step.input_map) == {t.name for t in model.input}
        assert set(step.input_map.values()) <= produced
        assert set(step.output_map) <= {t.name for t in model.output}
        produced |= set(step.output_map.values())
    assert {t.name for t in ensemble.output} <= produced


def test_options_reach_the_configs(repositories):
    configs = _configs(repositories["tiny"][1])
    group = configs["energy"].instance_group[0]
    assert (group.kind, group.count) == (KIND.Value("KIND_CPU"), 2)
    assert configs["generator"].parameters["intra_op_thread_count"].string_value == "1"
    ring = _configs(repositories["ring"][1])
    assert ring["energy"].max_batch_size == 64
    assert ring["energy"].instance_group[0].kind == KIND.Value("KIND_AUTO")
    assert "intra_op_thread_count" not in ring["energy"].parameters


@pytest.mark.parametrize("which", ["tiny", "ring"])
def test_tritonclient_gets_the_repository_answers_from_ebgen_serve(repositories, which, tmp_path):
    model_dir, repository = repositories[which]
    info = read_model_info(model_dir)
    rng = np.random.default_rng(3)
    z = rng.uniform(-1, 1, (5, info["latent"]["z_dim"])).astype(np.float32)
    x_ort = _session(repository, "generator").run(None, {"z": z})[0]
    energy_ort = _session(repository, "energy").run(None, {"x": x_ort})[0]
    with http_service(model_dir, tmp_path / "serve.log") as url:
        client = triton.InferenceServerClient(url=url, network_timeout=30)
        try:
            def infer(model, name, array, output):
                tensor = triton.InferInput(name, list(array.shape), "FP32")
                tensor.set_data_from_numpy(array)
                wanted = [triton.InferRequestedOutput(output)]
                return client.infer(model, [tensor], outputs=wanted, model_version="1"
                                    ).as_numpy(output)
            x = infer("generator", "z", z, "x")
            energy = infer("energy", "x", x_ort, "energy")
        finally:
            client.close()
    np.testing.assert_allclose(x, x_ort, atol=1e-5)
    # Triton hands a batched scalar back as [batch, 1] (dims [1], reshape []); ebgen as [batch]
    np.testing.assert_allclose(energy, energy_ort.reshape(-1), rtol=1e-5, atol=1e-5)


def test_a_config_that_disagrees_with_its_onnx_is_refused(repositories):
    model_dir, repository = repositories["ring"]
    configs = repository_configs(read_model_info(model_dir), TritonOptions())
    energy = configs["energy"]
    energy["input"][0]["dims"] = [3]
    with pytest.raises(EbgenError, match="shape"):
        check_against_onnx(repository / "energy" / "1" / "model.onnx", energy)
    energy["input"][0]["name"] = "points"
    with pytest.raises(EbgenError, match="inputs"):
        check_against_onnx(repository / "energy" / "1" / "model.onnx", energy)


def test_cli_refuses_to_overwrite_and_bad_instances(repositories, tmp_path):
    _, repository = repositories["ring"]
    result = run_cli(["export", "ring", "--format", "triton", "--out", str(repository)])
    assert result.exit_code == 2 and "--force" in result.output
    (tmp_path / "notes.txt").write_text("mine")
    result = run_cli(["export", "ring", "--format", "triton", "--out", str(tmp_path),
                      "--force"])
    assert result.exit_code == 2 and "not a Triton repository" in result.output
    assert (tmp_path / "notes.txt").read_text() == "mine"
    result = run_cli(["export", "ring", "--format", "triton", "--out", str(tmp_path / "new"),
                      "--instances", "tpu:2"])
    assert result.exit_code == 2 and "KIND:COUNT" in result.output
    assert not (tmp_path / "new").exists()
    assert parse_instances("GPU:3") == ("gpu", 3) and parse_instances("auto") == ("auto", 1)
