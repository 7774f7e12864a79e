"""Load generators and servers for `load.py`: wrk (or a lean asyncio client, run as its own
process so its CPU is counted apart), a sequential latency probe, and both engines started on
free ports of 127.0.0.1 (stopped on exit).

    python benchmarks/load_clients.py URL BODY_FILE CONTENT_TYPE CLIENTS SECONDS  # lean client
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlparse

import numpy as np

from ebgen.sessions import available_cores

HOST = "127.0.0.1"  # the only address these ever send to
SAMPLES = 16


@dataclasses.dataclass
class Level:
    """One row: an engine and endpoint at a number of clients."""

    engine: str
    endpoint: str
    clients: int
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    req_per_s: float
    samples_per_s: float
    client_cpu: float = float("nan")  # the load generator's share of all cores

    HEADER = ("| engine | endpoint | clients | requests | p50 ms | p99 ms | req/s | samples/s "
              "| errors | client CPU |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")

    @classmethod
    def of(cls, engine: str, endpoint: str, clients: int, lat: list[float], wall: float,
           errors: int = 0) -> Level:
        n = len(lat)
        pct = (lambda q: 1e3 * float(np.percentile(lat, q))) if lat else (lambda q: float("nan"))
        return cls(engine, endpoint, clients, n, errors, pct(50), pct(99), n / wall,
                   SAMPLES * n / wall)

    def markdown(self) -> str:
        cpu = "–" if self.client_cpu != self.client_cpu else f"{100 * self.client_cpu:.0f} %"
        return (f"| {self.engine} | {self.endpoint} | {self.clients} | {self.requests} | "
                f"{self.p50_ms:.2f} | {self.p99_ms:.2f} | {self.req_per_s:.0f} | "
                f"{self.samples_per_s:.0f} | {self.errors} | {cpu} |")


def free_port(span: int = 1) -> int:
    """A port P on 127.0.0.1 with P .. P+span-1 free."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        try:
            for p in range(port, port + span):
                with socket.socket() as s:
                    s.bind((HOST, p))
            return port
        except OSError:
            continue
    raise RuntimeError("no free ports")


def _run_measured(cmd: list[str]) -> tuple[str, float, float]:
    """Run `cmd`; its stdout, wall seconds and CPU seconds (user + system)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        return out.read().decode(), wall, usage.ru_utime + usage.ru_stime


_WRK_SCRIPT = """
wrk.method = "POST"
local f = io.open(%(body)q, "rb"); wrk.body = f:read("*a"); f:close()
wrk.headers["Content-Type"] = %(content_type)q
%(headers)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("EBGEN %%d %%d %%d %%d %%f %%f\\n", summary.requests, e.status,
    e.connect + e.read + e.write + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_load(url: str, body: bytes, content_type: str, headers: dict[str, str], clients: int,
             seconds: float) -> Level:
    """`clients` keep-alive connections POSTing `body` for `seconds`, from one wrk thread."""
    with tempfile.TemporaryDirectory(prefix="ebgen-wrk-") as tmp:
        body_file, script = Path(tmp) / "body", Path(tmp) / "post.lua"
        body_file.write_bytes(body)
        lua_str = lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
        extra = "\n".join(f"wrk.headers[{lua_str(k)}] = {lua_str(v)}" for k, v in headers.items())
        script.write_text(_WRK_SCRIPT.replace("%(body)q", lua_str(str(body_file)))
                          .replace("%(content_type)q", lua_str(content_type))
                          .replace("%(headers)s", extra).replace("%%", "%"))
        out, wall, cpu = _run_measured(["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s",
                                        "--timeout", "30s", "-s", str(script), url])
    line = next((ln for ln in out.splitlines() if ln.startswith("EBGEN ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {out[-500:]}")
    total, status_errors, socket_errors, duration_us, p50_us, p99_us = line.split()[1:]
    ok = int(total) - int(status_errors)
    duration = int(duration_us) / 1e6
    return Level("", "", clients, ok, int(status_errors) + int(socket_errors),
                 float(p50_us) / 1e3, float(p99_us) / 1e3, ok / duration,
                 SAMPLES * ok / duration, cpu / (wall * available_cores()))


def python_load(url: str, body: bytes, content_type: str, headers: dict[str, str],
                clients: int, seconds: float) -> Level:
    """The lean asyncio client (this file run as a script) in its own process."""
    with tempfile.NamedTemporaryFile(suffix=".body") as f:
        f.write(body)
        f.flush()
        out, wall, cpu = _run_measured([sys.executable, __file__, url, f.name, content_type,
                                        str(clients), str(seconds), json.dumps(headers)])
    result = json.loads(out.strip().splitlines()[-1])
    level = Level.of("", "", clients, result["latencies"], result["wall"], result["errors"])
    level.client_cpu = cpu / (wall * available_cores())
    return level


def _request_bytes(url: str, body: bytes, content_type: str, headers: dict[str, str]) -> bytes:
    u = urlparse(url)
    head = [f"POST {u.path or '/'} HTTP/1.1", f"Host: {u.hostname}:{u.port}",
            f"Content-Type: {content_type}", f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _lean_client(url: str, body: bytes, content_type: str, headers: dict[str, str],
                       clients: int, seconds: float) -> dict:
    request = _request_bytes(url, body, content_type, headers)
    u = urlparse(url)
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def one() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(u.hostname, u.port)
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            writer.write(request)
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            if status == 200:
                latencies.append(time.perf_counter() - t)
            else:
                errors += 1
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(clients)))
    return {"latencies": latencies, "errors": errors, "wall": time.perf_counter() - start}


def probe_latency(url: str, body: bytes, headers: dict[str, str], seconds: float) -> list[float]:
    """Latencies of back-to-back JSON POSTs on one keep-alive connection for `seconds`."""
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    hdrs = {"Content-Type": "application/json", **headers}
    lat, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(lat) < 20:
        t = time.perf_counter()
        conn.request("POST", u.path, body, hdrs)
        response = conn.getresponse()
        response.read()
        if response.status == 200:
            lat.append(time.perf_counter() - t)
    conn.close()
    return lat


@contextlib.contextmanager
def _server(command: Callable[[int], list[str]], ready_path: str, env: dict | None = None
            ) -> Iterator[str]:
    """`command(port)` in its own process group on a free port until `ready_path` answers 200;
    yields its base URL, then stops it (Ctrl-C, SIGKILL should it linger)."""
    import httpx

    port = free_port()
    proc = subprocess.Popen(command(port), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://{HOST}:{port}"
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{base}{ready_path}", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"{command(port)[2]} exited with {proc.returncode}")
            time.sleep(0.5)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def started_http(model_dir: str, workers: int, extra: list[str]):
    """`ebgen serve MODEL` on a free port (a context manager); yields its base URL."""
    return _server(lambda port: [sys.executable, "-m", "ebgen", "serve", model_dir, "--host",
                                 HOST, "--port", str(port), "--workers", str(workers),
                                 "--device", "cpu", *extra], "/v2/health/ready")


def started_floor(workers: int, sizes: dict[str, int]):
    """`floor_app` (canned answers of `sizes` bytes by path) under uvicorn with `workers`
    processes on a free port (a context manager); yields its base URL."""
    env = {**os.environ, "EBGEN_FLOOR_SIZES": json.dumps(sizes)}
    return _server(lambda port: [sys.executable, "-m", "uvicorn", "floor_app:app", "--app-dir",
                                 str(Path(__file__).resolve().parent), "--host", HOST, "--port",
                                 str(port), "--workers", str(workers), "--no-access-log",
                                 "--log-level", "warning"], "/ready", env)


@contextlib.contextmanager
def started_torchserve(model_dir: str, workers: int, batch: int, delay_ms: int,
                       threads: int | None, max_queue: int = 64
                       ) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """TorchServe with both archives on free ports; yields (URLs by endpoint, auth headers)."""
    from ebgen.serve.torchserve import TorchServe, TorchServeConfig

    port, grpc = free_port(3), free_port(2)
    cfg = TorchServeConfig(model_dir, port=port, management_port=port + 1, metrics_port=port + 2,
                           grpc_inference_port=grpc, grpc_management_port=grpc + 1,
                           workers=workers, max_batch_size=batch, max_delay_ms=delay_ms,
                           threads=threads, max_queue=max_queue)
    with TorchServe(cfg) as ts:
        ts.wait_ready()
        yield {"generate": ts.url("generate"), "score": ts.url("score")}, ts.auth_headers()


if __name__ == "__main__":
    url, body_file, content_type, clients, seconds, headers = sys.argv[1:7]
    print(json.dumps(asyncio.run(_lean_client(url, Path(body_file).read_bytes(), content_type,
                                              json.loads(headers), int(clients),
                                              float(seconds)))))
