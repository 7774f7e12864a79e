"""The built-in HTTP service end to end: a real `ebgen serve` (2 uvicorn workers) on a free
127.0.0.1 port, answers compared with `ebgen.load_model` in process."""
from __future__ import annotations

import contextlib
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import bad_requests, free_port, http_service, wait_until
from ebgen.images import tile_images
from ebgen.pixels import unit_to_uint8
from ebgen.serve import codecs

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
BODY_CAP = 2**20


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    """`ebgen serve MODEL --workers 2` on a free port; stopped with SIGINT (Ctrl-C)."""
    log = tmp_path_factory.mktemp("http") / "serve.log"
    with http_service(tiny_model_dir, log, "--workers", "2", "--max-body-mb",
                      str(BODY_CAP / 2**20)) as host:
        with httpx.Client(base_url=f"http://{host}", timeout=30) as client:
            yield client


def test_health_and_metadata(server, model):
    assert server.get("/v2/health/live").json() == {"live": True}
    assert server.get("/v2/health/ready").json() == {"ready": True}
    meta = server.get("/v2/models/generator").json()
    assert meta["inputs"][0] == {"name": "z", "datatype": "FP32", "shape": [-1, model.z_dim]}
    assert meta["outputs"][0]["shape"] == [-1, 1, 8, 8]
    names = [o["name"] for o in server.get("/v2/models/energy").json()["outputs"]]
    assert names == ["energy", "log_density", "percentile"]
    assert server.get("/v2/models/energy/ready").json()["ready"] is True


def test_generate_png_grid_npy_json_match_in_process(server, model):
    one = server.post("/generate", json={"num_samples": 1, "seed": 11})
    assert one.status_code == 200 and one.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(codecs.decode_payload(one.content),
                                  model.generate_uint8(1, 11)[0])
    grid = server.post("/generate", json={"num_samples": 16, "seed": 5, "grid": True})
    np.testing.assert_array_equal(codecs.decode_payload(grid.content),
                                  tile_images(model.generate_uint8(16, 5)))
    npy = server.post("/generate", json={"num_samples": 16, "seed": 5, "format": "npy"})
    assert npy.headers["x-seed"] == "5"
    np.testing.assert_array_equal(np.load(io.BytesIO(npy.content)), model.generate(16, 5))
    js = server.post("/generate", json={"num_samples": 3, "seed": 5, "format": "json"}).json()
    assert js["seed"] == 5 and js["shape"] == [3, 1, 8, 8] and "grid" not in js
    for image, want in zip(js["images"], model.generate_uint8(3, 5)):
        np.testing.assert_array_equal(codecs.decode_base64_image(image), want)


def test_generate_refined_matches_the_in_process_chain(server, model):
    """refine_steps on /generate and on v2: latent MALA on latent_potential.onnx, the same
    chain (seeded by the request's seed) as `InferenceModel.refine` in process."""
    z, _ = model.refine(model.latents(6, 4), steps=5, step_size=0.1, seed=4)
    want = model.generate_from_latents(z)
    request = {"num_samples": 6, "seed": 4, "format": "npy", "refine_steps": 5,
               "refine_step_size": 0.1}
    refined = server.post("/generate", json=request)
    assert refined.status_code == 200, refined.text
    got = np.load(io.BytesIO(refined.content))
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert not np.allclose(got, model.generate(6, 4))
    again = server.post("/generate", json=request)
    np.testing.assert_array_equal(np.load(io.BytesIO(again.content)), got)
    r = server.post("/v2/models/generator/infer", json={"parameters": {
        "num_samples": 6, "seed": 4, "refine_steps": 5, "refine_step_size": 0.1}}).json()
    out = r["outputs"][0]
    np.testing.assert_allclose(np.asarray(out["data"]).reshape(out["shape"]), want, atol=1e-5)


def test_score_png_npy_batch_and_mnist(server, model, mnist_digits):
    x = model.generate(4, seed=9)
    png = codecs.encode_png(unit_to_uint8(x[0]))
    got = server.post("/score", content=png, headers={"Content-Type": "image/png"}).json()
    want = model.score(unit_to_uint8(x[:1]))
    np.testing.assert_allclose(got["energy"], want["energy"], rtol=1e-6)
    np.testing.assert_allclose(got["percentile"], want["percentile"], rtol=1e-6)
    got = server.post("/score", content=codecs.encode_npy(x)).json()
    np.testing.assert_allclose(got["energy"], model.energy(x), rtol=1e-6)
    np.testing.assert_allclose(got["log_density"], -model.energy(x), rtol=1e-6)
    digits = server.post("/score", json={"instances": [codecs.b64(codecs.encode_png(d))
                                                       for d in mnist_digits]}).json()
    want = model.score(mnist_digits)
    np.testing.assert_allclose(digits["energy"], want["energy"], rtol=1e-6)
    assert all(0 <= p <= 100 for p in digits["percentile"])


def test_v2_infer_generator_and_energy(server, model):
    r = server.post("/v2/models/generator/infer",
                    json={"id": "a", "parameters": {"num_samples": 2, "seed": 3}}).json()
    out = r["outputs"][0]
    assert r["id"] == "a" and out["name"] == "x" and out["shape"] == [2, 1, 8, 8]
    np.testing.assert_allclose(np.asarray(out["data"]).reshape(out["shape"]),
                               model.generate(2, 3), atol=1e-6)
    z = model.latents(2, 3)
    r = server.post("/v2/models/generator/infer", json={"inputs": [
        {"name": "z", "shape": [2, model.z_dim], "datatype": "FP32", "data": z.ravel().tolist()}]})
    np.testing.assert_allclose(np.asarray(r.json()["outputs"][0]["data"]).reshape(2, 1, 8, 8),
                               model.generate(2, 3), atol=1e-6)
    pixels = model.generate_uint8(3, 4)
    r = server.post("/v2/models/energy/infer", json={
        "inputs": [{"name": "x", "shape": [3, 1, 8, 8], "datatype": "UINT8",
                    "data": pixels.ravel().tolist()}], "outputs": [{"name": "percentile"}]})
    (out,) = r.json()["outputs"]
    np.testing.assert_allclose(out["data"], model.score(pixels)["percentile"], rtol=1e-6)


@pytest.mark.parametrize("name, endpoint, body, ctype, status",
                         bad_requests(body_cap=BODY_CAP), ids=lambda v: v if isinstance(v, str)
                         and " " in v else None)
def test_bad_input_gets_4xx_one_line_json_and_server_keeps_answering(
        server, name, endpoint, body, ctype, status):
    r = server.post(f"/{endpoint}", content=body, headers={"Content-Type": ctype})
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert "\n" not in r.text.strip() and r.json()["error"]
    assert server.post("/generate", json={"num_samples": 1, "seed": 0}).status_code == 200


@pytest.mark.parametrize("path, body, status", [
    ("/v2/models/energy/infer", {"inputs": [{"name": "x", "shape": [1, 3, 8, 8],
                                             "datatype": "FP32", "data": [0.0] * 192}]}, 422),
    ("/v2/models/generator/infer", {"parameters": {"num_samples": 10**6}}, 422),
    ("/v2/models/generator/infer", {"inputs": [], "extra": 1}, 422),
    ("/v2/models/nope/infer", {}, 404),
    ("/v2/models/generator/infer", {"inputs": [{"name": "z", "shape": [1, 16],
                                                "datatype": "FP32", "data": [3.4e38, -3.4e38] * 8}]}, 422),
    ("/v2/models/generator/infer", {"inputs": [{"name": "z", "shape": [1, 16],
                                                "datatype": ["FP32"], "data": [0.0] * 16}]}, 422),
    ("/v2/models/energy/infer", {"inputs": [{"name": "x", "shape": [1025, 1, 8, 8],
                                             "datatype": "FP32", "data": [0.0] * 65600}]}, 422),
    ("/v2/models/generator/infer", {"inputs": [{"name": "z", "shape": [1] * 66,
                                                "datatype": "FP32", "data": [0.0]}]}, 422),
])
def test_bad_v2_requests(server, path, body, status):
    r = server.post(path, json=body)
    assert r.status_code == status and r.json()["error"]


def test_concurrent_requests_agree_and_metrics_count_them(server, model):
    seeds = list(range(12))

    def call(seed):
        return server.post("/generate", json={"num_samples": 2, "seed": seed, "format": "npy"})

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(call, seeds))
    for seed, r in zip(seeds, replies):
        assert r.status_code == 200
        np.testing.assert_allclose(np.load(io.BytesIO(r.content)), model.generate(2, seed),
                                   atol=1e-6)
    text = server.get("/metrics").text
    assert 'ebgen_requests_total{endpoint="/generate",status="200"}' in text
    assert "ebgen_batch_size_bucket" in text and "ebgen_request_seconds" in text
    assert server.get("/nowhere").json() == {"error": "no such endpoint GET /nowhere"}
    wrong = server.get("/generate")                          # the plain-ASGI REST routes
    assert wrong.status_code == 405 and wrong.json() == {"error": "Method Not Allowed"}
    assert 'ebgen_requests_total{endpoint="/generate",status="405"} 1.0' in \
        server.get("/metrics").text
    empty = server.post("/generate", content=b"")             # empty body: the defaults
    assert empty.status_code == 200 and empty.headers["content-type"] == "image/png"


class _BrokenGenerator:
    """The real model, except that its generator fails (a stand-in for any server-side bug)."""

    def __init__(self, model):
        self._model = model

    def __getattr__(self, name):
        return getattr(self._model, name)

    def generate_from_latents(self, z):
        raise RuntimeError("a server-side bug")


@contextlib.contextmanager
def _in_process_server(app):
    """`app` served by uvicorn in a thread on a free 127.0.0.1 port; yields the base URL."""
    import threading

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{base}/v2/health/live", timeout=2).status_code == 200, 30)
        yield base
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_500_is_one_line_json_counted_and_keeps_the_connection(model, tiny_model_dir):
    from ebgen.serve.http_service import ServeConfig, create_app

    app = create_app(ServeConfig(str(tiny_model_dir)), model=_BrokenGenerator(model))
    with _in_process_server(app) as base:
        with httpx.Client(base_url=base, timeout=30) as client:
            r = client.post("/generate", json={"seed": 1})
            assert r.status_code == 500 and r.json() == {"error": "internal error: RuntimeError"}
            assert "close" not in r.headers.get("connection", "")
            score = client.post("/score", content=codecs.encode_npy(model.generate(2, 0)),
                                headers={"Content-Type": "application/octet-stream"})
            assert score.status_code == 200  # the same connection keeps answering
            v2 = client.post("/v2/models/generator/infer",
                             json={"parameters": {"num_samples": 2, "seed": 1}})
            assert v2.status_code == 500 and v2.json() == {"error": "internal error: RuntimeError"}
            metrics = client.get("/metrics").text
        assert 'ebgen_requests_total{endpoint="/generate",status="500"} 1.0' in metrics


def test_refinement_runs_off_the_event_loop(tiny_model_dir):
    """A long refined /generate (8,192 samples × 100 MALA steps, seconds of work) never holds
    up the one event loop: health checks sent meanwhile are answered at once."""
    import time

    from ebgen.serve.http_service import ServeConfig, create_app
    from ebgen.serve.validation import Limits

    app = create_app(ServeConfig(str(tiny_model_dir), device="cpu",
                                 limits=Limits(max_samples=8192)))
    with _in_process_server(app) as base, ThreadPoolExecutor(1) as pool:
        with httpx.Client(base_url=base, timeout=120) as slow_client, \
                httpx.Client(base_url=base, timeout=30) as client:
            started = time.perf_counter()
            slow = pool.submit(slow_client.post, "/generate", json={
                "num_samples": 8192, "seed": 1, "format": "npy", "refine_steps": 100})
            latencies = []
            while not slow.done():
                sent = time.perf_counter()
                assert client.get("/v2/health/live").status_code == 200
                latencies.append(time.perf_counter() - sent)
                time.sleep(0.05)
            assert slow.result().status_code == 200
            took = time.perf_counter() - started
    assert took > 1.0, f"the refinement took {took:.2f} s: too short to tell"
    assert len(latencies) >= 5 and max(latencies) < min(0.5, took / 2), (took, latencies)


def test_a_lone_request_gets_the_workers_cores_and_the_same_answer(model, tiny_model_dir):
    """Issue 16: a batch running by itself goes to sessions on all the worker's threads (the
    cores of its --parallel-batches); their answers match the one-thread sessions'."""
    from ebgen.serve.http_service import ServeConfig, create_app

    app = create_app(ServeConfig(str(tiny_model_dir), parallel_batches=2, threads=1))
    with _in_process_server(app) as base:
        x = model.generate(3, seed=11)
        with httpx.Client(base_url=base, timeout=30) as client:
            gen = client.post("/generate", json={"num_samples": 4, "seed": 5, "format": "npy"})
            score = client.post("/score", content=codecs.encode_npy(x),
                                headers={"Content-Type": "application/octet-stream"})
        backend = app.backend
        assert backend.in_flight == 0    # counted in and out again
    lone = backend.lone_model
    assert lone is not None and lone is not backend.model
    assert lone._energy.session.get_session_options().intra_op_num_threads == 2
    assert backend.model._energy.session.get_session_options().intra_op_num_threads == 1
    np.testing.assert_allclose(codecs.decode_npy(gen.content), model.generate(4, seed=5),
                               atol=1e-5)
    np.testing.assert_allclose(score.json()["energy"], model.energy(x), rtol=1e-5, atol=1e-4)


def test_a_client_that_never_finishes_its_body_gets_408(model, tiny_model_dir):
    import socket
    from urllib.parse import urlparse

    from ebgen.serve.http_service import ServeConfig, create_app
    from ebgen.serve.validation import Limits

    config = ServeConfig(str(tiny_model_dir), limits=Limits(body_timeout_s=1.0))
    with _in_process_server(create_app(config, model=model)) as base:
        url = urlparse(base)
        with socket.create_connection((url.hostname, url.port), timeout=20) as sock:
            sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                         b"\r\nContent-Length: 100\r\n\r\n{\"instances\": ")
            answer = b""  # the rest of the body never comes; the answer may come in pieces
            while b"}" not in answer:
                piece = sock.recv(4096)
                if not piece:
                    break
                answer += piece
        assert answer.startswith(b"HTTP/1.1 408") and b"not received within 1 s" in answer


@pytest.mark.slow
@pytest.mark.parametrize("path, kind", [("/generate", "generate"), ("/score", "score"),
                                        ("/v2/models/generator/infer", "v2"),
                                        ("/v2/models/energy/infer", "v2")])
def test_fuzz_every_endpoint_with_300_malformed_requests(server, model, path, kind):
    """300 malformed bodies an endpoint: no 5xx, every error a one-line JSON, no hang (30 s a
    request), and the server still answers a good request after."""
    from hypothesis import HealthCheck, given, settings

    from fuzzing import bodies, check_answer

    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(bodies(kind))
    def one(case):
        body, content_type = case
        r = server.post(path, content=body, headers={"Content-Type": content_type},
                        timeout=30)
        check_answer(r.status_code, r.headers.get("content-type", ""), r.text)

    one()
    good = server.post("/generate", json={"num_samples": 2, "seed": 5, "format": "npy"})
    assert good.status_code == 200
    np.testing.assert_allclose(np.load(io.BytesIO(good.content)), model.generate(2, 5),
                               atol=1e-6)


class _SlowGenerator(_BrokenGenerator):
    """The real model with a generator that takes 0.8 s a batch (longer than the ten clients
    below take to give up) and counts the rows it ran."""

    rows = 0

    def generate_from_latents(self, z):
        import time

        time.sleep(0.8)
        type(self).rows += len(z)
        return self._model.generate_from_latents(z)


def test_requests_whose_clients_hung_up_are_never_computed(model, tiny_model_dir):
    import socket
    import threading
    from urllib.parse import urlparse

    from ebgen.serve.http_service import ServeConfig, create_app

    slow = _SlowGenerator(model)
    # one slot, so the others queue behind the first; no time budget, which the fake 0.8 s
    # a batch would turn into one-row batches
    config = ServeConfig(str(tiny_model_dir), max_batch_samples=64, max_delay_ms=0,
                         parallel_batches=1, max_batch_ms=1e6)
    with _in_process_server(create_app(config, model=slow)) as base:
        url = urlparse(base)
        body = b'{"num_samples": 64, "seed": 1, "format": "npy"}'
        request = (b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n" % len(body)) + body
        first = threading.Thread(target=lambda: httpx.post(f"{base}/generate", content=body,
                                                           timeout=30))
        first.start()  # keeps the generator busy while the others queue
        for _ in range(10):  # clients that give up after 50 ms
            with socket.create_connection((url.hostname, url.port)) as sock:
                sock.sendall(request)
                sock.settimeout(0.05)
                try:
                    sock.recv(10)
                except socket.timeout:
                    pass
        first.join()
        r = httpx.post(f"{base}/generate", content=body, timeout=30)
        assert r.status_code == 200
    # the first and the last request ran; the ten abandoned ones gave up while the first
    # ran, so none of them is computed (one request's rows of slack)
    assert slow.rows <= 3 * 64, slow.rows


@pytest.mark.slow
def test_load_benchmark_smoke_floor_and_service_side_by_side(tiny_model_dir):
    """`benchmarks/load.py` runs the floor (bare uvicorn, canned answers) and the service in
    one run and prints the bound the two put on any Python server."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "load.py"
    done = subprocess.run([sys.executable, str(script), str(tiny_model_dir), "--engines",
                           "floor,http", "--clients", "1,32", "--seconds", "1", "--client",
                           "python", "--no-head-of-line"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    floor = [r for r in rows if r.startswith("| floor: bare uvicorn (1w) |")]
    http = [r for r in rows if r.startswith("| http (1w) |")]
    assert len(floor) == len(http) == 4                      # 2 endpoints × 2 levels
    assert all(r.split("|")[9].strip() == "0" for r in floor + http)  # no errors
    assert "generate: bound on any Python server at 32 clients" in done.stdout
    assert "score: HTTP p50 at 1 client / in-process" in done.stdout
