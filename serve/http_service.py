"""The built-in HTTP service (FastAPI + uvicorn): `ebgen serve MODEL` with no JVM.

Endpoints (bodies in `ebgen.serve.service`):

    GET  /v2/health/live, /v2/health/ready     Open Inference Protocol v2 (KServe, Triton)
    GET  /v2, /v2/models/{name}[/ready]        metadata of "generator" and "energy"
    POST /v2/models/generator/infer            input "z" [N, z_dim], or parameters
                                               {"num_samples", "seed"} → output "x"
    POST /v2/models/energy/infer               input "x" [N, C, H, W] (FP32 in [-1, 1] or
                                               UINT8) → "energy", "log_density", "percentile"
                                               (also under /versions/1; JSON or Triton's
                                               binary tensors: `ebgen.serve.v2`)
    POST /generate, POST /score                the same bodies as TorchServe's handlers
    GET  /metrics                              Prometheus

Concurrent requests are micro-batched into one onnxruntime call per model (bounded queue; a
full queue answers 503 with Retry-After). Every bad request gets a 4xx `{"error": "..."}`.

    curl -s 127.0.0.1:8080/generate -d '{"num_samples": 16, "seed": 0}' -o samples.png
    curl -s 127.0.0.1:8080/score --data-binary @digit.png
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import shutil
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ebgen import __version__

from . import lifeline, service, v2
from .batching import MicroBatcher
from .validation import (Limits, RequestError, check_body_size, check_count,
                         check_finite_output, check_generate, check_latents, check_samples)

log = logging.getLogger("uvicorn.error")  # shown by uvicorn's own log setup
CONFIG_ENV = "EBGEN_SERVE_CONFIG"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The pid of a multi-worker server's supervisor, which its workers watch.
SUPERVISOR_ENV = "EBGEN_SERVE_SUPERVISOR"


@dataclass
class ServeConfig:
    """How to run the HTTP service (also what `ebgen serve` options fill in)."""

    model: str
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    device: str = "auto"
    max_batch_size: int = 16
    max_delay_ms: float = 5.0
    max_queue: int = 64
    max_connections: int = 256    # per worker; uvicorn answers 503 beyond
    limits: Limits = field(default_factory=Limits)
    log_level: str = "info"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        data = json.loads(text)
        data["limits"] = Limits(**data.get("limits", {}))
        return cls(**data)


class _Metrics:
    """Prometheus metrics of one app (multi-process safe when PROMETHEUS_MULTIPROC_DIR is set)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("ebgen_requests", "HTTP requests answered.",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("ebgen_request_seconds", "Request latency.", ["endpoint"],
                                 registry=r)
        self.batch = Histogram("ebgen_batch_size", "Requests per onnxruntime call.", ["model"],
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.queue = Gauge("ebgen_queue_depth", "Requests waiting for a batch.", ["model"],
                           multiprocess_mode="livesum", registry=r)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _response(reply: service.Reply) -> Response:
    return Response(reply.body, status_code=reply.status, media_type=reply.content_type,
                    headers=reply.headers)


def _error(err: RequestError) -> Response:
    return _response(service.Reply.error(err))


async def _read_body(request: Request, limits: Limits) -> bytes:
    """The body, refused with 413 as soon as it (or its Content-Length) passes the cap, and
    with 408 when it takes longer than `limits.body_timeout_s` to arrive (a slow client)."""
    length = request.headers.get("content-length", "").strip()
    if length.isascii() and length.isdigit():
        check_body_size(int(length), limits)
    chunks, total = [], 0
    try:
        async with asyncio.timeout(limits.body_timeout_s):
            async for chunk in request.stream():
                total += len(chunk)
                check_body_size(total, limits)
                chunks.append(chunk)
    except TimeoutError:
        raise RequestError(408, f"request body not received within {limits.body_timeout_s:g} "
                                f"s") from None
    return b"".join(chunks)


async def _unless_abandoned(request: Request, work: Any) -> Any:
    """Await `work` (a batcher submission), cancelling it should the client hang up first: a
    queued request whose client has gone is never computed."""
    job = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(request.receive())  # after the body: only a disconnect
    try:
        await asyncio.wait({job, watch}, return_when=asyncio.FIRST_COMPLETED)
        if not job.done() and watch.done() and not watch.cancelled() \
                and watch.result().get("type") == "http.disconnect":
            job.cancel()
            raise RequestError(499, "client closed the request")
        return await job
    finally:
        watch.cancel()
        if not job.done():
            job.cancel()


def create_app(config: ServeConfig, model: Any = None) -> FastAPI:
    """The FastAPI app for `config` (loading `config.model` at start unless `model` is given)."""
    limits = config.limits
    metrics = _Metrics()
    state: dict[str, Any] = {"model": model, "ready": False}

    def batcher(name: str, run) -> MicroBatcher:
        b = MicroBatcher(lambda items: run(state["model"], items), config.max_batch_size,
                         config.max_delay_ms, config.max_queue, name=name, cost=len)
        b.on_batch = lambda n, s: metrics.batch.labels(name).observe(n)
        return b

    gen = batcher("generator", service.run_generator_batch)
    energy = batcher("energy", service.run_energy_batch)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if state["model"] is None:
            from .runtime import load_model

            state["model"] = load_model(config.model, config.device)
        m = state["model"]
        log.info("ebgen HTTP service: model %s %s on %s (pid %d)", m.info.get("name"),
                 list(m.sample_shape), ", ".join(m.providers), os.getpid())
        await gen.start()
        await energy.start()
        state["ready"] = True
        yield
        state["ready"] = False
        await gen.stop()
        await energy.stop()

    app = FastAPI(title="ebgen", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, err: RequestError):
        return _error(err)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        reason = err.detail if isinstance(err.detail, str) else "request refused"
        if err.status_code == 404:
            reason = f"no such endpoint {request.method} {request.url.path}"
        return _error(RequestError(err.status_code, reason))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError):
        return _error(RequestError(422, "invalid request"))

    @app.middleware("http")
    async def count(request: Request, call_next):
        start = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception as err:  # answered here, inside the app: a normal one-line JSON 500
            # that /metrics counts and that keeps the keep-alive connection usable
            log.exception("internal error on %s", request.url.path)
            response = _error(RequestError(500, f"internal error: {type(err).__name__}"))
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "other")
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
        metrics.queue.labels("generator").set(gen.queued)
        metrics.queue.labels("energy").set(energy.queued)
        return response

    @app.post("/generate")
    async def generate(request: Request):
        params = service.parse_generate(await _read_body(request, limits), limits)
        x = await _unless_abandoned(request, gen.submit(service.latents_for(state["model"],
                                                                             params)))
        return _response(await run_in_threadpool(service.encode_generate, state["model"],
                                                 params, x))

    @app.post("/score")
    async def score(request: Request):
        # decoding (PNG, JSON) runs off the event loop, which keeps answering health checks
        x = await run_in_threadpool(service.decode_score_request,
                                    await _read_body(request, limits), state["model"], limits)
        energies = await _unless_abandoned(request, energy.submit(x))
        return _response(service.Reply.json(service.score_result(state["model"], energies)))

    @app.get("/metrics")
    async def prometheus():
        body, media = metrics.render()
        return Response(body, media_type=media)

    @app.get("/v2")
    async def server_metadata():
        return {"name": "ebgen", "version": __version__, "extensions": v2.EXTENSIONS}

    @app.get("/v2/health/live")
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready():
        if not state["ready"]:
            raise RequestError(503, "model is loading")
        for b in (gen, energy):  # a batcher that died is restarted (and logged) here too
            if not b.alive:
                await b.start()
        return {"ready": True}

    def v2_model(name: str, version: str | None = None) -> Any:
        if name not in v2.MODELS:
            raise RequestError(404, f"unknown model {name[:40]!r}: expected generator or energy")
        if version is not None and version != "1":
            raise RequestError(404, f"model {name} has no version {version[:20]!r}; its one "
                                    f"version is 1")
        return state["model"]

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str | None = None):
        return v2.model_metadata(name, v2_model(name, version))

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None):
        v2_model(name, version)
        return {"name": name, "ready": state["ready"]}

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str | None = None):
        m = v2_model(name, version)
        body = v2.inflate(await _read_body(request, limits),
                          request.headers.get("content-encoding"), limits)
        req = v2.parse_request(body, request.headers.get(v2.HEADER_LENGTH), name,
                               v2.MODELS[name])
        expected = "z" if name == "generator" else "x"
        extra = sorted(set(req.inputs) - {expected})
        if extra:
            raise RequestError(422, f"unknown input {extra[0][:40]!r} of {name}; expected "
                                    f"{expected}")
        out: dict[str, np.ndarray] = {}
        parameters: dict[str, Any] = {}
        if name == "generator":
            if "z" in req.inputs:
                if req.parameters:
                    raise RequestError(422, "give either input z or parameters num_samples/seed")
                z = check_latents(req.inputs["z"], m.z_dim, limits)
            else:
                params = check_generate(req.parameters, limits)
                z, parameters = service.latents_for(m, params), {"seed": params.seed}
            out["x"] = check_finite_output(await _unless_abandoned(request, gen.submit(z)),
                                           "generator's output")
        else:
            if "x" not in req.inputs:
                raise RequestError(422, "energy needs input x")
            x = check_samples(req.inputs["x"], m.sample_shape)
            check_count(len(x), limits)
            result = service.score_result(m, await _unless_abandoned(request, energy.submit(x)))
            out = {"energy": np.asarray(result["energy"], np.float32),
                   "log_density": np.asarray(result["log_density"], np.float32),
                   "percentile": np.asarray(result["percentile"], np.float64)}
        content, headers = await run_in_threadpool(v2.encode_response, name, out, req,
                                                   parameters)
        media = "application/octet-stream" if headers else service.JSON_TYPE
        return Response(content, media_type=media, headers=headers)

    return app


def app_from_env() -> FastAPI:
    """uvicorn factory for worker processes: the app for the config in $EBGEN_SERVE_CONFIG.

    A worker of a multi-worker server exits (removing the shared metrics folder) when its
    supervisor dies, even by SIGKILL, rather than serve on as an orphan.
    """
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if supervisor and int(supervisor) == os.getppid():
        metrics_dir = os.environ.get(MULTIPROC_ENV)
        lifeline.exit_with_parent(int(supervisor), cleanup=lambda: metrics_dir and shutil.rmtree(
            metrics_dir, ignore_errors=True))
    return create_app(ServeConfig.from_json(os.environ[CONFIG_ENV]))


def run_http(config: ServeConfig) -> None:
    """Serve until Ctrl-C with `config.workers` uvicorn worker processes."""
    import tempfile

    import uvicorn

    os.environ[CONFIG_ENV] = config.to_json()
    metrics_dir = None
    if config.workers > 1:
        os.environ[SUPERVISOR_ENV] = str(os.getpid())
        if not os.environ.get(MULTIPROC_ENV):
            metrics_dir = os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="ebgen-metrics-")
    try:
        uvicorn.run("ebgen.serve.http_service:app_from_env", factory=True, host=config.host,
                    port=config.port, workers=config.workers, log_level=config.log_level,
                    limit_concurrency=config.max_connections, timeout_graceful_shutdown=5)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
