"""The HTTP service's Open Inference Protocol v2 with a stock client: the real `tritonclient`
package (binary tensor extension, versioned routes, gzip) against a real `ebgen serve` on a free
127.0.0.1 port, answers compared with `ebgen.load_model` in process; and malformed binary
bodies, which must get 4xx."""
from __future__ import annotations

import gzip
import json
import zlib

import numpy as np
import pytest

from conftest import http_service

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
triton = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

BODY_CAP = 2**20


@pytest.fixture(scope="module")
def url(tiny_model_dir, tmp_path_factory):
    """`ebgen serve MODEL` on a free port: its host:port."""
    with http_service(tiny_model_dir, tmp_path_factory.mktemp("v2") / "serve.log",
                      "--max-body-mb", str(BODY_CAP / 2**20)) as host:
        yield host


@pytest.fixture
def client(url):
    c = triton.InferenceServerClient(url=url, network_timeout=30)
    yield c
    c.close()


def _input(name, array, binary=True):
    datatype = {np.dtype(np.float32): "FP32", np.dtype(np.uint8): "UINT8"}[array.dtype]
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def test_stock_tritonclient_health_and_metadata(client, model):
    assert client.is_server_live() and client.is_server_ready()
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    assert client.is_model_ready("energy") and client.is_model_ready("generator", "1")
    meta = client.get_model_metadata("generator", model_version="1")
    assert meta["inputs"][0] == {"name": "z", "datatype": "FP32", "shape": [-1, model.z_dim]}
    with pytest.raises(InferenceServerException, match="no version"):
        client.get_model_metadata("generator", model_version="2")


@pytest.mark.parametrize("version", ["", "1"])
def test_stock_tritonclient_generator_binary_in_and_out(client, model, version):
    """A default call: binary input, no outputs named (so binary_data_output), both routes."""
    z = model.latents(3, seed=7)
    result = client.infer("generator", [_input("z", z)], model_version=version)
    np.testing.assert_allclose(result.as_numpy("x"), model.generate_from_latents(z), atol=1e-6)
    assert result.get_response()["outputs"][0]["parameters"]["binary_data_size"] == z.shape[0] * 64 * 4


def test_stock_tritonclient_energy_mixed_binary_and_json_outputs(client, model):
    pixels = model.generate_uint8(5, seed=2)
    want = model.score(pixels)
    outputs = [triton.InferRequestedOutput("energy", binary_data=True),
               triton.InferRequestedOutput("percentile", binary_data=False)]
    result = client.infer("energy", [_input("x", pixels)], outputs=outputs)
    energy, percentile = result.as_numpy("energy"), result.as_numpy("percentile")
    assert energy.dtype == np.float32 and percentile.dtype == np.float64
    np.testing.assert_allclose(energy, want["energy"], rtol=1e-6)
    np.testing.assert_allclose(percentile, want["percentile"], rtol=1e-6)
    assert result.as_numpy("log_density") is None       # not asked for
    response = result.get_response()["outputs"]
    assert "binary_data_size" in response[0]["parameters"] and "data" in response[1]


def test_stock_tritonclient_json_input_and_gzip_request(client, model):
    x = model.generate(4, seed=9).astype(np.float32)
    want = model.score(x)["energy"]
    for compression in (None, "gzip", "deflate"):
        result = client.infer("energy", [_input("x", x, binary=False)],
                              request_compression_algorithm=compression)
        np.testing.assert_allclose(result.as_numpy("energy"), want, rtol=1e-5)


def test_stock_tritonclient_errors_are_exceptions_with_reasons(client, model):
    z = np.zeros((2, model.z_dim + 1), np.float32)
    with pytest.raises(InferenceServerException, match=r"expected \[N, 16\]") as err:
        client.infer("generator", [_input("z", z)])
    assert err.value.status() == "422"
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.infer("nope", [_input("z", z)])


def _post(url, body, **headers):
    return httpx.post(f"http://{url}/v2/models/energy/infer", content=body, headers=headers,
                      timeout=30)


def _binary_body(model, size_delta=0, tail=b""):
    x = np.zeros((2, *model.sample_shape), np.float32)
    raw = x.tobytes()
    head = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": len(raw) + size_delta}}]})
    return head.encode() + raw + tail, str(len(head))


@pytest.mark.parametrize("case, status, reason", [
    ("size off by 4", 422, "needs 512"),
    ("trailing bytes", 400, "follow the inputs"),
    ("cut short", 400, "cut short"),
    ("header length past the body", 400, "between 1 and"),
    ("header length not a number", 400, "between 1 and"),
    ("unsupported encoding", 415, "not supported"),
    ("gzip bomb", 413, "exceeds the limit"),
    ("corrupt gzip", 400, "not valid gzip"),
    ("classification output", 422, "classification"),
])
def test_malformed_binary_bodies_get_4xx(url, model, case, status, reason):
    body, length = _binary_body(model)
    headers = {"Inference-Header-Content-Length": length}
    if case == "size off by 4":
        body, length = _binary_body(model, size_delta=4)
        headers["Inference-Header-Content-Length"] = length
    elif case == "trailing bytes":
        body += b"\0" * 8
    elif case == "cut short":
        body = body[:-8]
    elif case == "header length past the body":
        headers["Inference-Header-Content-Length"] = str(len(body) + 1)
    elif case == "header length not a number":
        headers["Inference-Header-Content-Length"] = "²".encode()
    elif case == "unsupported encoding":
        headers["Content-Encoding"] = "br"
    elif case == "gzip bomb":
        body, headers = gzip.compress(b" " * (2 * BODY_CAP)), {"Content-Encoding": "gzip"}
    elif case == "corrupt gzip":
        body, headers["Content-Encoding"] = zlib.compress(body)[:-3], "gzip"
    else:
        body = json.dumps({"inputs": [], "outputs": [
            {"name": "energy", "parameters": {"classification": 3}}]}).encode()
        headers = {}
    r = _post(url, body, **headers)
    assert r.status_code == status, r.text
    assert reason in r.json()["error"] and "\n" not in r.text.strip()


def test_fuzz_binary_bodies_never_5xx(url, model):
    """300 binary-extension bodies, right or wrong in every part: never a 5xx, every error a
    one-line JSON, and a good request answered after."""
    from hypothesis import HealthCheck, given, settings

    from fuzzing import binary_bodies, check_answer

    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(binary_bodies(), st_path())
    def one(case, path):
        body, length = case
        r = httpx.post(f"http://{url}{path}", content=body, timeout=30,
                       headers={"Inference-Header-Content-Length": length,
                                "Content-Type": "application/octet-stream"})
        check_answer(r.status_code, r.headers.get("content-type", ""), r.text)

    one()
    body, length = _binary_body(model)
    r = _post(url, body, **{"Inference-Header-Content-Length": length})
    assert r.status_code == 200 and len(r.json()["outputs"]) == 3


def st_path():
    from hypothesis import strategies as st

    return st.sampled_from(["/v2/models/energy/infer", "/v2/models/generator/infer",
                            "/v2/models/energy/versions/1/infer"])
