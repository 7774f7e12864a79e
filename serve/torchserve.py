"""Run TorchServe on a model directory: safe config, start, wait for ready, stop.

`ebgen serve MODEL_DIR --engine torchserve` writes `config.properties` into a working folder
and starts TorchServe with the directory's two archives (`generate.mar`, `score.mar`; built
into the working folder with the `ts_generate.py` / `ts_score.py` handlers when the model
directory lacks them). Safe defaults: every address on 127.0.0.1, token auth on (keys in
`<workdir>/key_file.json`), the model-management API off, `allowed_urls` local files only,
Prometheus metrics; the keys are renewed every half of their lifetime (TorchServe's token API),
so a long-running server never starts refusing them. TorchServe's pid file, temp files, logs
and keys all stay in the working folder, so several instances never clash.

    with TorchServe(TorchServeConfig("models/tiny", port=8080)) as ts:
        ts.wait_ready()
        requests.post(ts.url("generate"), json={"seed": 0}, headers=ts.auth_headers())
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import logging
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ebgen.errors import EbgenError
from ebgen.model_format import read_model_info
from ebgen.names import ARCHIVE_KINDS, HANDLER_MODULES
from ebgen.sessions import THREADS_ENV, serving_threads

from . import lifeline
from .health import KEY_FILE, local_request, read_token
from .validation import LIMITS_ENV, Limits

log = logging.getLogger(__name__)
ARCHIVES = ARCHIVE_KINDS
HANDLER_DIR = Path(__file__).resolve().parent


@dataclass
class TorchServeConfig:
    """How to run TorchServe (what `ebgen serve --engine torchserve` options fill in)."""

    model: str
    host: str = "127.0.0.1"
    port: int = 8080               # inference API
    management_port: int = 8081
    metrics_port: int = 8082
    grpc_inference_port: int = 7070   # TorchServe always binds its two gRPC APIs too, so every
    grpc_management_port: int = 7071  # instance on a host needs its own pair
    workers: int = 1               # per model
    max_batch_size: int = 8
    max_delay_ms: int = 5
    max_queue: int = 64            # TorchServe's job_queue_size: requests waiting per model
    threads: int | None = None     # onnxruntime threads per worker (None: cores / workers)
    auth: bool = True
    token_expiration_min: float = 1440  # keys' lifetime; renewed every half of it
    workdir: str | None = None     # default: a new temporary folder
    limits: Limits = field(default_factory=Limits)
    startup_timeout_s: float = 180.0


def _archive_version(path: Path) -> str:
    from ebgen.export import check_archive

    return str(check_archive(path)["model"].get("modelVersion", "1.0"))


def prepare_store(model_dir: Path, workdir: Path) -> Path:
    """The model store: `model_dir` when it has both archives, else one built in `workdir`."""
    if all((model_dir / f"{kind}.mar").is_file() for kind in ARCHIVES):
        return model_dir
    from ebgen.export import build_archive

    store = workdir / "model-store"
    for kind in ARCHIVES:
        build_archive(model_dir, kind, HANDLER_DIR / HANDLER_MODULES[kind], store)
    return store


def write_config(cfg: TorchServeConfig, store: Path, workdir: Path) -> Path:
    """`config.properties` with safe defaults and per-model batching; returns its path."""
    info = read_model_info(cfg.model)
    sample = 1
    for d in info["sample_shape"]:
        sample *= int(d)
    # Largest answer: max_samples float32 samples, base64 PNGs in JSON, or a .npy; with slack.
    response_cap = max(6553500, 2 * cfg.limits.max_samples * sample * 4 + 2**20)
    models = {kind: {_archive_version(store / f"{kind}.mar"): {
        "defaultVersion": True, "marName": f"{kind}.mar", "minWorkers": cfg.workers,
        "maxWorkers": cfg.workers, "batchSize": cfg.max_batch_size,
        "maxBatchDelay": cfg.max_delay_ms, "responseTimeout": 120}} for kind in ARCHIVES}
    lines = {
        "inference_address": f"http://{cfg.host}:{cfg.port}",
        "management_address": f"http://127.0.0.1:{cfg.management_port}",
        "metrics_address": f"http://{cfg.host}:{cfg.metrics_port}",
        "grpc_inference_port": cfg.grpc_inference_port,
        "grpc_management_port": cfg.grpc_management_port,
        "disable_token_authorization": str(not cfg.auth).lower(),
        "token_expiration_min": cfg.token_expiration_min,
        "enable_model_api": "false",
        "allowed_urls": "file://.*",
        "install_py_dep_per_model": "false",
        # raw bodies to the handlers, which parse them as the HTTP service does (NaN literals
        # refused, the size cap on the bytes sent); the TS_DECODE_INPUT_REQUEST variable has
        # no effect, the frontend sets it for its workers from this property
        "decode_input_request": "false",
        "metrics_mode": "prometheus",
        "enable_metrics_api": "true",
        "model_store": str(store),
        "load_models": ",".join(f"{k}.mar" for k in ARCHIVES),
        "models": json.dumps(models, separators=(",", ":")),
        "default_workers_per_model": cfg.workers,
        "job_queue_size": cfg.max_queue,
        "max_request_size": cfg.limits.max_body_bytes + 2**20,
        "max_response_size": response_cap,
        "vmargs": "-Xmx512m -XX:+UseContainerSupport -XX:+ExitOnOutOfMemoryError",
    }
    path = workdir / "config.properties"
    path.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
    return path


def command(cfg: TorchServeConfig, config: Path, store: Path) -> list[str]:
    """The TorchServe command line: foreground, both archives, auth off only with --no-auth."""
    cmd = [sys.executable, "-m", "ts.model_server", "--start", "--foreground",
           "--ts-config", str(config), "--model-store", str(store), "--ncs",
           "--models", *[f"{k}={k}.mar" for k in ARCHIVES]]
    return cmd if cfg.auth else [*cmd, "--disable-token-auth"]


class TorchServe:
    """A TorchServe process of our own: `start`, `wait_ready`, `stop` (also a context manager)."""

    def __init__(self, cfg: TorchServeConfig) -> None:
        if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
            raise EbgenError("TorchServe needs Java 17: install a JRE (e.g. apt-get install "
                             "openjdk-17-jre-headless) or use --engine http")
        self.cfg = cfg
        self.model_dir = Path(cfg.model)
        read_model_info(self.model_dir)
        self.workdir = Path(cfg.workdir or tempfile.mkdtemp(prefix="ebgen-torchserve-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None
        self._stop_renewing = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def key_file(self) -> Path:
        """Where TorchServe writes its tokens (with auth on)."""
        return self.workdir / KEY_FILE

    def url(self, model: str = "", api: str = "predictions") -> str:
        """Inference URL of `model` (e.g. url("generate")), or of `api` alone ("ping")."""
        host = "127.0.0.1" if self.cfg.host in ("0.0.0.0", "::") else self.cfg.host
        base = f"http://{host}:{self.cfg.port}"
        return f"{base}/{api}/{model}" if model else f"{base}/{api}"

    def token(self, kind: str = "inference") -> str | None:
        """The current `kind` key from key_file.json (None with --no-auth or not yet written)."""
        return read_token(self.workdir, kind) if self.cfg.auth else None

    def auth_headers(self) -> dict[str, str]:
        """{"Authorization": "Bearer <inference key>"}, or {} without auth."""
        token = self.token()
        return {"Authorization": f"Bearer {token}"} if token else {}

    def start(self) -> None:
        """Start TorchServe in the background (its own process group), logs in workdir/logs."""
        store = prepare_store(self.model_dir, self.workdir)
        config = write_config(self.cfg, store, self.workdir)
        (self.workdir / "tmp").mkdir(exist_ok=True)
        cmd = command(self.cfg, config, store)
        env = dict(os.environ, TMPDIR=str(self.workdir / "tmp"), TEMP=str(self.workdir / "tmp"),
                   LOG_LOCATION=str(self.workdir / "logs"),
                   METRICS_LOCATION=str(self.workdir / "logs"),
                   **{LIMITS_ENV: json.dumps(dataclasses.asdict(self.cfg.limits)),
                      THREADS_ENV: str(self.cfg.threads or serving_threads(self.cfg.workers))})
        self.log = open(self.workdir / "torchserve.out", "ab")
        self.process = subprocess.Popen(cmd, cwd=self.workdir, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        # TorchServe has its own process group (a Ctrl-C reaches us, not it); should we be
        # killed outright, the watchdog stops that group.
        self._watchdog = lifeline.watchdog(self.process.pid)
        if self.cfg.auth:
            self._stop_renewing.clear()
            self._renewer = threading.Thread(target=self._renew_loop, daemon=True,
                                             name="torchserve-token-renewer")
            self._renewer.start()

    def renew_tokens(self) -> bool:
        """Ask TorchServe for fresh inference and management keys (its token API, with the
        never-expiring API key); it rewrites key_file.json. True when both were renewed."""
        api_key = read_token(self.workdir, "API")
        if not api_key:
            return False
        base = f"http://127.0.0.1:{self.cfg.management_port}/token"
        headers = {"Authorization": f"Bearer {api_key}"}
        return all(local_request("GET", f"{base}?type={kind}", headers)[0] == 200
                   for kind in ("inference", "management"))

    def _renew_loop(self) -> None:
        """Renew the keys every half of their lifetime (retrying every second while a renewal
        fails), so a long-running server never answers 400 for an expired key. The first
        renewal waits half a lifetime too: renewing at once would invalidate the key a client
        has just read from key_file.json."""
        period = max(1.0, self.cfg.token_expiration_min * 60.0 / 2.0)
        wait = period
        while not self._stop_renewing.wait(wait):
            renewed = self.renew_tokens()
            if not renewed:
                log.debug("TorchServe token renewal did not succeed yet")
            wait = period if renewed else 1.0

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until /ping says Healthy and both models answer a request; or raise."""
        limit = timeout or self.cfg.startup_timeout_s
        deadline = time.monotonic() + limit
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise EbgenError(f"TorchServe exited with code {self.process.returncode}; see "
                                 f"{self.workdir / 'torchserve.out'} and "
                                 f"{self.workdir / 'logs'}")
            ping, body = local_request("GET", self.url(api="ping"), self.auth_headers())
            if ping == 200 and b"Healthy" in body:
                gen, _ = local_request("POST", self.url("generate"), self.auth_headers(),
                               b'{"num_samples": 1, "seed": 0, "format": "npy"}')
                score, _ = local_request("POST", self.url("score"), self.auth_headers(),
                                 b'{"instances": [[[0.0]]]}')
                if gen == 200 and score in (200, 422):
                    return
                last = f"generate {gen}, score {score}"
            else:
                last = f"ping {ping} {body.strip()[:80]!r}"
            time.sleep(1.0)
        raise EbgenError(f"TorchServe not ready after {limit:.0f} s ({last}); logs in "
                         f"{self.workdir / 'logs'}")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop our TorchServe: SIGTERM its java frontend (the launcher then exits and reaps
        it), SIGKILL the whole process group after `timeout` s."""
        import psutil

        self._stop_renewing.set()
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            try:
                children = psutil.Process(proc.pid).children()
            except psutil.NoSuchProcess:
                children = []
            for child in children or [psutil.Process(proc.pid)]:
                try:
                    child.terminate()
                except psutil.NoSuchProcess:
                    pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # stragglers: workers, a stuck frontend
            except ProcessLookupError:
                pass
            if proc.poll() is None:
                proc.wait(10.0)
        watchdog, self._watchdog = getattr(self, "_watchdog", None), None
        if watchdog is not None:
            watchdog.kill()
            watchdog.wait()
        if getattr(self, "log", None) is not None:
            self.log.close()

    def __enter__(self) -> TorchServe:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve_torchserve(cfg: TorchServeConfig, echo: Any = print) -> int:
    """Start, wait until ready, print the endpoints, run until Ctrl-C or exit; returns a code."""
    ts = TorchServe(cfg)
    ts.start()
    stop = {"now": False}

    def on_signal(signum: int, frame: Any) -> None:
        stop["now"] = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)  # a closed terminal stops TorchServe too
    try:
        ts.wait_ready()
        echo(f"TorchServe ready: model {read_model_info(cfg.model).get('name')}")
        echo(f"  POST {ts.url('generate')}    POST {ts.url('score')}")
        echo(f"  GET  {ts.url(api='ping')}    metrics http://{cfg.host}:{cfg.metrics_port}"
             "/metrics")
        if cfg.auth:
            echo(f"  token auth on: send 'Authorization: Bearer <inference key>' from "
                 f"{ts.key_file}")
        else:
            echo("  token auth OFF (--no-auth)")
        echo(f"  logs in {ts.workdir / 'logs'}; Ctrl-C stops")
        code = ts.process.wait() if ts.process else 1
        return 0 if stop["now"] else code
    except KeyboardInterrupt:
        echo("stopping TorchServe")
        return 0
    finally:
        ts.stop()
