"""A real TorchServe (Java 17) with the generate/score archives on free 127.0.0.1 ports, token
auth on; answers compared with `ebgen.load_model` in process."""
from __future__ import annotations

import io
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import bad_requests, torchserve_config
from ebgen.images import tile_images
from ebgen.pixels import unit_to_uint8
from ebgen.serve import codecs
from ebgen.serve.validation import Limits

pytestmark = [pytest.mark.torchserve,
              pytest.mark.skipif(shutil.which("java") is None, reason="needs Java 17")]
httpx = pytest.importorskip("httpx")
pytest.importorskip("ts")
BODY_CAP = 2**20


@pytest.fixture(scope="module")
def ts(tiny_model_dir, tmp_path_factory):
    from ebgen.serve.torchserve import TorchServe

    cfg = torchserve_config(tiny_model_dir, tmp_path_factory.mktemp("ts"), max_batch_size=4,
                            max_delay_ms=20, limits=Limits(max_body_bytes=BODY_CAP))
    with TorchServe(cfg) as server:
        server.wait_ready(150)
        yield server
    assert server.process is None


@pytest.fixture(scope="module")
def client(ts):
    with httpx.Client(headers=ts.auth_headers(), timeout=60) as c:
        yield c


def test_safe_config_and_token_auth(ts, client):
    props = dict(line.split("=", 1) for line in
                 (ts.workdir / "config.properties").read_text().splitlines())
    for key in ("inference_address", "management_address", "metrics_address"):
        assert props[key].startswith("http://127.0.0.1:")
    assert props["enable_model_api"] == "false" and props["allowed_urls"] == "file://.*"
    assert props["disable_token_authorization"] == "false"
    assert props["metrics_mode"] == "prometheus"
    assert ts.token() and ts.key_file.is_file()
    assert httpx.post(ts.url("generate"), json={"seed": 0}).status_code in (400, 401, 403)
    assert client.get(ts.url(api="ping")).json()["status"] == "Healthy"
    mgmt = f"http://127.0.0.1:{ts.cfg.management_port}/models?url=generate.mar&model_name=x"
    refused = httpx.post(mgmt, headers={"Authorization": f"Bearer {ts.token('management')}"})
    assert 400 <= refused.status_code < 500          # model API off: no registering
    from ebgen.serve.health import healthcheck

    assert healthcheck(ts.workdir, ts.cfg.port) == 0
    assert healthcheck(ts.workdir / "elsewhere", ts.cfg.port) == 1   # no token: refused


@pytest.mark.slow
def test_keys_are_renewed_before_they_expire(tiny_model_dir, tmp_path):
    """Keys that live 6 s (TorchServe reads minutes as a float) stay valid for 20 s and more:
    the launcher renews them, so the Docker HEALTHCHECK never goes unhealthy after 24 h."""
    import time

    from ebgen.serve.health import healthcheck, read_token
    from ebgen.serve.torchserve import TorchServe

    cfg = torchserve_config(tiny_model_dir, tmp_path, token_expiration_min=0.1)
    port = cfg.port
    with TorchServe(cfg) as server:
        server.wait_ready(150)
        first = read_token(tmp_path)
        time.sleep(20)
        assert read_token(tmp_path) != first  # renewed (the old key expired 14 s ago)
        assert healthcheck(tmp_path, port) == 0
        for _ in range(3):  # a renewal (every 3 s here) may replace the key just read: a
            #                 client re-reads key_file.json on a 400, as the README says
            r = httpx.post(server.url("generate"), json={"seed": 1, "format": "json"},
                           headers=server.auth_headers(), timeout=60)
            if r.status_code != 400:
                break
        assert r.status_code == 200, r.text


@pytest.mark.slow
def test_a_second_instance_runs_beside_the_first_on_its_own_ports(ts, tiny_model_dir, tmp_path):
    from ebgen.serve.torchserve import TorchServe

    props = dict(line.split("=", 1) for line in
                 (ts.workdir / "config.properties").read_text().splitlines())
    assert props["grpc_inference_port"] == str(ts.cfg.grpc_inference_port)
    assert props["grpc_management_port"] == str(ts.cfg.grpc_management_port)
    cfg = torchserve_config(tiny_model_dir, tmp_path)
    with TorchServe(cfg) as second:
        second.wait_ready(150)
        for server in (ts, second):
            r = httpx.post(server.url("generate"), json={"seed": 3, "format": "json"},
                           headers=server.auth_headers(), timeout=60)
            assert r.status_code == 200, r.text


def test_keys_are_not_renewed_right_after_start(tiny_model_dir, tmp_path, monkeypatch):
    """The key a client reads from key_file.json when the server is ready stays valid: the
    first renewal waits half the keys' lifetime (renewing at once made a replayed Docker
    start fail with 400 on a slow machine)."""
    import threading
    import time

    from ebgen.serve.torchserve import TorchServe, TorchServeConfig

    server = TorchServe(TorchServeConfig(str(tiny_model_dir), workdir=str(tmp_path),
                                         token_expiration_min=0.1))  # renew every 3 s
    calls: list[float] = []
    monkeypatch.setattr(server, "renew_tokens", lambda: calls.append(time.monotonic()) or True)
    start = time.monotonic()
    loop = threading.Thread(target=server._renew_loop, daemon=True)
    loop.start()
    time.sleep(4.5)
    server._stop_renewing.set()
    loop.join(5)
    assert len(calls) == 1 and calls[0] - start >= 2.9  # once, after half of 6 s


def test_no_auth_config_and_command(tiny_model_dir, tmp_path):
    from ebgen.serve.torchserve import TorchServeConfig, command, prepare_store, write_config

    cfg = TorchServeConfig(str(tiny_model_dir), host="0.0.0.0", auth=False, max_batch_size=3,
                           max_queue=17)
    store = prepare_store(tiny_model_dir, tmp_path)
    config = write_config(cfg, store, tmp_path)
    props = dict(line.split("=", 1) for line in config.read_text().splitlines())
    assert props["disable_token_authorization"] == "true"
    assert props["management_address"].startswith("http://127.0.0.1:")  # never exposed
    assert '"batchSize":3' in props["models"] and props["job_queue_size"] == "17"
    cmd = command(cfg, config, store)
    assert cmd[-1] == "--disable-token-auth" and "generate=generate.mar" in cmd
    assert "--disable-token-auth" not in command(TorchServeConfig("m"), config, store)


def test_generate_png_grid_npy_json_match_in_process(ts, client, model):
    one = client.post(ts.url("generate"), json={"num_samples": 1, "seed": 11})
    assert one.status_code == 200 and one.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(codecs.decode_payload(one.content),
                                  model.generate_uint8(1, 11)[0])
    grid = client.post(ts.url("generate"), json={"num_samples": 16, "seed": 5, "grid": True})
    np.testing.assert_array_equal(codecs.decode_payload(grid.content),
                                  tile_images(model.generate_uint8(16, 5)))
    npy = client.post(ts.url("generate"), json={"num_samples": 16, "seed": 5, "format": "npy"})
    assert npy.headers["x-seed"] == "5"
    np.testing.assert_array_equal(np.load(io.BytesIO(npy.content)), model.generate(16, 5))
    js = client.post(ts.url("generate"),
                     json={"num_samples": 3, "seed": 5, "format": "json", "grid": True}).json()
    assert js["seed"] == 5 and "grid" in js
    for image, want in zip(js["images"], model.generate_uint8(3, 5)):
        np.testing.assert_array_equal(codecs.decode_base64_image(image), want)
    refined = client.post(ts.url("generate"), json={"num_samples": 4, "seed": 5, "format": "npy",
                                                    "refine_steps": 3})  # the archive's
    assert refined.status_code == 200, refined.text  # latent_potential.onnx, no torch
    z, _ = model.refine(model.latents(4, 5), steps=3, seed=5)
    np.testing.assert_allclose(np.load(io.BytesIO(refined.content)),
                               model.generate_from_latents(z), atol=1e-5)


def test_score_png_npy_batch_and_mnist(ts, client, model, mnist_digits):
    x = model.generate(4, seed=9)
    png = codecs.encode_png(unit_to_uint8(x[0]))
    got = client.post(ts.url("score"), content=png, headers={"Content-Type": "image/png"}).json()
    np.testing.assert_allclose(got["energy"], model.energy(unit_to_uint8(x[:1])), rtol=1e-6)
    got = client.post(ts.url("score"), content=codecs.encode_npy(x),
                      headers={"Content-Type": "application/octet-stream"}).json()
    np.testing.assert_allclose(got["energy"], model.energy(x), rtol=1e-6)
    np.testing.assert_allclose(got["percentile"], model.score(x)["percentile"], rtol=1e-6)
    got = client.post(ts.url("score"), content=codecs.encode_npy(mnist_digits),
                      headers={"Content-Type": "application/octet-stream"}).json()
    np.testing.assert_allclose(got["energy"], model.energy(mnist_digits), rtol=1e-6)


@pytest.mark.parametrize("name, endpoint, body, ctype, status",
                         bad_requests(body_cap=BODY_CAP), ids=lambda v: v if isinstance(v, str)
                         and " " in v else None)
def test_bad_input_gets_4xx_one_line_json_and_server_keeps_answering(
        ts, client, name, endpoint, body, ctype, status):
    r = client.post(ts.url(endpoint), content=body, headers={"Content-Type": ctype})
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert "\n" not in r.text.strip() and r.json()["error"]
    assert client.post(ts.url("generate"), json={"num_samples": 1}).status_code == 200


def test_concurrent_requests_batch_with_one_answer_each(ts, client, model):
    bodies = [{"num_samples": 2, "seed": s, "format": "npy"} for s in range(6)] + \
             [{"num_samples": 2, "seed": 1, "bogus": 1}]

    def call(body):
        return client.post(ts.url("generate"), json=body)

    with ThreadPoolExecutor(7) as pool:
        replies = list(pool.map(call, bodies))
    assert [r.status_code for r in replies] == [200] * 6 + [422]
    for seed, r in enumerate(replies[:6]):
        np.testing.assert_allclose(np.load(io.BytesIO(r.content)), model.generate(2, seed),
                                   atol=1e-6)
    metrics = httpx.get(f"http://127.0.0.1:{ts.cfg.metrics_port}/metrics").text
    assert "ts_inference_requests_total" in metrics


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["generate", "score"])
def test_fuzz_both_archives_with_300_malformed_requests(ts, client, model, kind):
    """300 malformed bodies per archive: no 5xx, every error a one-line JSON, no hang, no
    worker death (a good request answered after). Form-encoded bodies are left out: TorchServe's
    Java frontend decodes them before any handler runs and answers a bad %-escape with its own
    500 (`test_torchserve_frontend_refuses_bad_form_bodies_itself`)."""
    from hypothesis import HealthCheck, given, settings

    from fuzzing import CONTENT_TYPES, bodies, check_answer

    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(bodies(kind, tuple(t for t in CONTENT_TYPES if "form" not in t)))
    def one(case):
        body, content_type = case
        r = client.post(ts.url(kind), content=body, headers={"Content-Type": content_type},
                        timeout=30)
        check_answer(r.status_code, r.headers.get("content-type", ""), r.text)

    one()
    good = client.post(ts.url("generate"), json={"num_samples": 2, "seed": 5, "format": "npy"})
    assert good.status_code == 200
    np.testing.assert_allclose(np.load(io.BytesIO(good.content)), model.generate(2, 5),
                               atol=1e-6)


def test_torchserve_frontend_refuses_bad_form_bodies_itself(ts, client):
    """A known TorchServe limit, kept visible: its frontend, not ebgen's handler, answers a
    form-encoded body with a malformed %-escape, with a 500 (the HTTP service answers 400)."""
    r = client.post(ts.url("score"), content=b'{"instances": [{"%": "&"}]}',
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 500 and "ErrorDataDecoderException" in r.text
    assert client.post(ts.url("generate"), json={"seed": 1}).status_code == 200


def test_a_points_model_becomes_ready_and_answers(tmp_path):
    """The readiness probe asked for a PNG, which a points model refuses (422): `ebgen serve
    ring --engine torchserve` waited until its start-up timeout. It asks for .npy now."""
    from ebgen import load_model, resolve_model_path
    from ebgen.serve.torchserve import TorchServe

    ring = resolve_model_path("ring")
    cfg = torchserve_config(ring, tmp_path / "ts")
    with TorchServe(cfg) as server:
        server.wait_ready(150)
        with httpx.Client(headers=server.auth_headers(), timeout=60) as c:
            r = c.post(server.url("generate"), json={"num_samples": 5, "seed": 2,
                                                     "format": "npy"})
            x = np.load(io.BytesIO(r.content))
            scored = c.post(server.url("score"), content=codecs.encode_npy(x)).json()
    model = load_model(ring, device="cpu")
    np.testing.assert_allclose(x, model.generate(5, 2), atol=1e-5)
    np.testing.assert_allclose(scored["energy"], model.energy(x), rtol=1e-4, atol=1e-4)
