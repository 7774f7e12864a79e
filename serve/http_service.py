"""The built-in HTTP service (FastAPI + uvicorn): `ebgen serve MODEL` with no JVM.

Here: the config, metrics, and `create_app`, which wires a `Backend` (model, micro-batchers,
limits: `ebgen.serve.backend`) to the REST routes (`ebgen.serve.rest`) and the v2 routes
(`ebgen.serve.v2`). Endpoints (REST bodies in `ebgen.serve.service`):

    GET  /v2/health/live, /v2/health/ready     Open Inference Protocol v2 (KServe, Triton)
    GET  /v2, /v2/models/{name}[/ready]        metadata of "generator" and "energy"
    POST /v2/models/generator/infer            input "z" [N, z_dim], or parameters
                                               {"num_samples", "seed"} → output "x"
    POST /v2/models/energy/infer               input "x" [N, C, H, W] (FP32 in [-1, 1] or
                                               UINT8) → "energy", "log_density", "percentile"
                                               (also under /versions/1; JSON or Triton's
                                               binary tensors: `ebgen.serve.v2`)
    POST /generate, POST /score                the same bodies as TorchServe's handlers
    GET  /metrics                              Prometheus (also the drift of served energies:
                                               ebgen_score_energy, and once calibrated
                                               ebgen_score_tail_probability, _anomalies)

Concurrent requests are micro-batched into one onnxruntime call per model (bounded queue; a
full queue answers 503 with Retry-After). Every bad request gets a 4xx `{"error": "..."}`.

    curl -s 127.0.0.1:8080/generate -d '{"num_samples": 16, "seed": 0}' -o samples.png
    curl -s 127.0.0.1:8080/score --data-binary @digit.png
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from ebgen import __version__
from ebgen.sessions import serving_threads

from . import lifeline, service, v2
from .backend import Backend, log
from .rest import ENDPOINT_KEY, RestRoutes
from .validation import Limits, RequestError

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
    # Batching (`ebgen.serve.batching`; README "Serving speed": the measurements that chose it)
    max_batch_samples: int = 1024  # rows per onnxruntime call at most
    max_batch_ms: float = 2.0     # and no more than the running fit says take this long
    max_delay_ms: float = 2.0     # ceiling on waiting for a batch, taken only where it pays
    max_queue: int = 64
    parallel_batches: int | None = None  # batches at once per worker (None: cores / workers)
    threads: int = 1              # onnxruntime threads per batch
    max_connections: int = 256    # per worker; uvicorn answers 503 beyond
    limits: Limits = field(default_factory=Limits)
    log_level: str = "info"
    access_log: bool = False      # a log line per request costs more than a small request

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
        self.drift: dict[str, Any] | None = None  # made when the first scores are seen

    def observe_energies(self, model: Any, energies: np.ndarray) -> None:
        """Drift: served energies in buckets at the training data's energy quantiles (with no
        drift, bucket shares follow the quantile levels), tail probabilities and anomalies
        of a calibrated model."""
        from prometheus_client import Counter, Histogram

        if self.drift is None:
            quantiles = model.info.get("energy_quantiles") or {}
            buckets = sorted(set(quantiles.get("values") or [])) or [0.0]
            self.drift = {"energy": Histogram(
                "ebgen_score_energy", "Served energies, in buckets at the training data's "
                "energy quantiles (levels in model.json).", buckets=buckets,
                registry=self.registry)}
            if getattr(model, "calibration", None) is not None:
                self.drift["tail"] = Histogram(
                    "ebgen_score_tail_probability", "Served tail probabilities (calibrated).",
                    buckets=(1e-4, 1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0),
                    registry=self.registry)
                self.drift["anomalies"] = Counter(
                    "ebgen_score_anomalies", "Served samples flagged is_anomaly.",
                    registry=self.registry)
        energies = np.asarray(energies, dtype=np.float64)
        for e in energies:
            self.drift["energy"].observe(e)
        if "tail" in self.drift:
            for p in model.calibration.survival(energies):
                self.drift["tail"].observe(p)
            self.drift["anomalies"].inc(int(model.calibration.is_anomaly(energies).sum()))

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _JsonErrors:
    """ASGI middleware: an exception that escaped a route is answered with the normal one-line
    JSON 500 (not Starlette's plain text), which /metrics counts and which keeps the keep-alive
    connection usable. Around the REST routes and, inside FastAPI's stack, around its own."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_tracked(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception as err:
            log.exception("internal error on %s", scope.get("path"))
            if started:
                raise
            await _error(RequestError(500, f"internal error: {type(err).__name__}"))(
                scope, receive, send)


class _Counted:
    """ASGI middleware: counts and times every HTTP request for /metrics (a 500 included:
    `_JsonErrors` answers it). Plain ASGI, not Starlette's BaseHTTPMiddleware, which costs a
    task group and a stream per request."""

    def __init__(self, app: Any, metrics: _Metrics, backend: Backend) -> None:
        self.app, self.metrics, self.backend = _JsonErrors(app), metrics, backend

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def send_counted(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        self.backend.in_flight += 1
        try:
            await self.app(scope, receive, send_counted)
        finally:
            self.backend.in_flight -= 1
        endpoint = scope.get(ENDPOINT_KEY) or getattr(scope.get("route"), "path", "other")
        self.metrics.requests.labels(endpoint, str(status[0])).inc()
        self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
        for name, batcher in self.backend.batchers.items():
            self.metrics.queue.labels(name).set(batcher.queued)


def _response(reply: service.Reply) -> Response:
    return Response(reply.body, status_code=reply.status, media_type=reply.content_type,
                    headers=reply.headers)


def _error(err: RequestError) -> Response:
    return _response(service.Reply.error(err))


def metrics_router(metrics: _Metrics) -> APIRouter:
    """`GET /metrics` (Prometheus)."""
    routes = APIRouter()

    @routes.get("/metrics")
    async def prometheus():
        body, media = metrics.render()
        return Response(body, media_type=media)

    return routes


def create_app(config: ServeConfig, model: Any = None) -> Any:
    """The ASGI app for `config` (loading `config.model` at start unless `model` is given):
    a `Backend`, the REST and v2 routes over it, one-line JSON errors, metrics."""
    metrics = _Metrics()
    batching = dict(max_batch_samples=config.max_batch_samples, max_batch_ms=config.max_batch_ms,
                    max_delay_ms=config.max_delay_ms, max_queue=config.max_queue,
                    parallel_batches=config.parallel_batches or serving_threads(config.workers))
    backend = Backend(config.model, config.device, config.limits, batching, model=model,
                      on_batch=lambda name, n: metrics.batch.labels(name).observe(n),
                      threads=config.threads, on_energies=metrics.observe_energies)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await backend.start()
        yield
        await backend.stop()

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

    app.include_router(metrics_router(metrics))
    app.include_router(v2.router(backend))
    app.add_middleware(_JsonErrors)  # inside Starlette's plain-text ServerErrorMiddleware
    # Outside FastAPI's own middleware stack: the two hot routes skip it altogether.
    return _Counted(RestRoutes(app, backend), metrics, backend)  # outermost: counts all


def app_from_env() -> Any:
    """uvicorn factory for worker processes: the app for the config in $EBGEN_SERVE_CONFIG.

    A worker of a multi-worker server exits (removing the shared metrics folder) when its
    supervisor dies, even by SIGKILL, rather than serve on as an orphan.
    """
    supervisor = os.environ.get(SUPERVISOR_ENV)
    # Its parent, or gone already: a worker orphaned while it was starting stops at once.
    if supervisor and (int(supervisor) == os.getppid() or not lifeline.alive(int(supervisor))):
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
                    access_log=config.access_log,
                    limit_concurrency=config.max_connections, timeout_graceful_shutdown=5)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
