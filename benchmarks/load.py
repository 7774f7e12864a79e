"""Load test of both serving engines, next to the in-process call, in one run (127.0.0.1 only).

For each engine (the built-in HTTP service, TorchServe) and each number of concurrent clients
(1, 8, 32), sends `generate` (16 samples, .npy) and `score` (16 images, .npy) requests and
prints p50 / p99 latency and throughput; the first rows time `ebgen.load_model`'s
`generate(16)` / `score(16 images)` called directly in this process. Every level is bounded in
requests (--requests) and in time (--max-seconds); servers are started on free local ports and
stopped at the end.

    python benchmarks/load.py                       # trains + exports the tiny model first
    python benchmarks/load.py models/mnist --engines http --clients 1,8
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"  # the only address this script ever sends to
SAMPLES = 16


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


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def row(engine: str, endpoint: str, clients: int, lat: list[float], wall: float,
        errors: int = 0) -> dict:
    n = len(lat)
    return {"engine": engine, "endpoint": endpoint, "clients": clients, "requests": n,
            "errors": errors, "p50_ms": 1e3 * percentile(lat, 50),
            "p99_ms": 1e3 * percentile(lat, 99), "req_per_s": n / wall if wall else 0.0,
            "samples_per_s": SAMPLES * n / wall if wall else 0.0}


def in_process(model_dir: str, requests: int, max_seconds: float) -> list[dict]:
    """`load_model(...).generate(16, seed)` and `.score(x16)`, called back to back."""
    from ebgen import load_model

    model = load_model(model_dir, device="cpu")
    x = model.generate(SAMPLES, seed=123)
    calls = {"generate": lambda i: model.generate(SAMPLES, seed=i),
             "score": lambda i: model.score(x)}
    rows = []
    for name, call in calls.items():
        for i in range(3):
            call(i)
        lat, start = [], time.perf_counter()
        for i in range(requests):
            t = time.perf_counter()
            call(i)
            lat.append(time.perf_counter() - t)
            if time.perf_counter() - start > max_seconds:
                break
        rows.append(row("in-process", name, 1, lat, time.perf_counter() - start))
    return rows


async def drive(url: str, body: bytes | dict, clients: int, requests: int, max_seconds: float,
                headers: dict[str, str]) -> tuple[list[float], int, float]:
    """`requests` POSTs from `clients` concurrent clients; stops early after `max_seconds`."""
    import httpx

    lat: list[float] = []
    errors = 0
    counter = iter(range(requests))
    deadline = time.perf_counter() + max_seconds
    kwargs = {"json": body} if isinstance(body, dict) else {"content": body}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(headers=headers, timeout=60, limits=limits) as client:
        async def one_client() -> None:
            nonlocal errors
            for _ in counter:
                if time.perf_counter() > deadline:
                    return
                t = time.perf_counter()
                try:
                    r = await client.post(url, **kwargs)
                except httpx.HTTPError:  # reset, refused, timed out: an error, not a crash
                    errors += 1
                    continue
                if r.status_code == 200:
                    lat.append(time.perf_counter() - t)
                else:
                    errors += 1

        for _ in range(2):  # warm up connections and workers
            await client.post(url, **kwargs)
        start = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        return lat, errors, time.perf_counter() - start


def bench_engine(engine: str, urls: dict[str, str], headers: dict[str, str], args,
                 bodies: dict) -> list[dict]:
    rows = []
    for clients in args.clients:
        for endpoint in ("generate", "score"):
            n = max(args.requests, 4 * clients)
            lat, errors, wall = asyncio.run(drive(urls[endpoint], bodies[endpoint], clients, n,
                                                  args.max_seconds, headers))
            rows.append(row(engine, endpoint, clients, lat, wall, errors))
            print(_fmt(rows[-1]), file=sys.stderr, flush=True)
    return rows


def run_http(model_dir: str, args, bodies: dict) -> list[dict]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ebgen.cli.main", "serve", model_dir,
                             "--host", HOST, "--port", str(port), "--workers", str(args.workers),
                             "--device", "cpu"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        import httpx

        base = f"http://{HOST}:{port}"
        for _ in range(120):
            try:
                if httpx.get(f"{base}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        return bench_engine(f"http ({args.workers}w)", {"generate": f"{base}/generate",
                                                       "score": f"{base}/score"}, {}, args, bodies)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def run_torchserve(model_dir: str, args, bodies: dict) -> list[dict]:
    from ebgen.serve.torchserve import TorchServe, TorchServeConfig

    port = free_port(3)
    cfg = TorchServeConfig(model_dir, port=port, management_port=port + 1,
                           metrics_port=port + 2, workers=args.workers, max_batch_size=8,
                           max_delay_ms=5)
    with TorchServe(cfg) as ts:
        ts.wait_ready()
        return bench_engine(f"torchserve ({args.workers}w)", {"generate": ts.url("generate"),
                                                             "score": ts.url("score")},
                            ts.auth_headers(), args, bodies)


def _fmt(r: dict) -> str:
    return (f"| {r['engine']:<16} | {r['endpoint']:<8} | {r['clients']:>7} | {r['requests']:>8} "
            f"| {r['p50_ms']:>8.1f} | {r['p99_ms']:>8.1f} | {r['req_per_s']:>8.1f} "
            f"| {r['samples_per_s']:>9.0f} | {r['errors']:>6} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", help="Model directory or bundled name (default: train "
                                            "+ export tiny).")
    p.add_argument("--engines", default="http,torchserve")
    p.add_argument("--clients", default="1,8,32")
    p.add_argument("--requests", type=int, default=64, help="Requests per level (at least "
                   "4 per client).")
    p.add_argument("--max-seconds", type=float, default=15.0, help="Time cap per level.")
    p.add_argument("--workers", type=int, default=1, help="Server workers (per model).")
    p.add_argument("--json", action="store_true", help="Also print the rows as JSON.")
    args = p.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory(prefix="ebgen-load-") as tmp:
        model_dir = args.model
        if model_dir is not None:  # a bundled name (mnist, ring, grid) or a directory
            from ebgen import resolve_model_path

            model_dir = str(resolve_model_path(model_dir))
        else:
            from ebgen.presets import preset_config
            from ebgen.export import export_model
            from ebgen.train import train

            train(preset_config("tiny"), Path(tmp) / "ckpt", progress=False)
            model_dir = str(export_model(Path(tmp) / "ckpt", Path(tmp) / "model",
                                         progress=False))
        from ebgen import load_model
        from ebgen.serve import codecs

        x = load_model(model_dir, device="cpu").generate(SAMPLES, seed=7)
        bodies = {"generate": {"num_samples": SAMPLES, "seed": 1, "format": "npy"},
                  "score": codecs.encode_npy(x)}
        rows = in_process(model_dir, args.requests, args.max_seconds)
        for engine in args.engines.split(","):
            rows += {"http": run_http, "torchserve": run_torchserve}[engine](model_dir, args,
                                                                             bodies)
    print(f"\n{SAMPLES} samples per request; model {model_dir if args.model else 'tiny (8x8)'}; "
          f"{os.cpu_count()} CPUs\n")
    print("| engine           | endpoint | clients | requests |  p50 ms  |  p99 ms  |  req/s   "
          "| samples/s | errors |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(_fmt(r))
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
