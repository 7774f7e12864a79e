"""Load test of both serving engines beside the in-process call and the onnxruntime ceiling, in
one run, on 127.0.0.1 only.

Rows: `in-process` (`ebgen.load_model(...).generate(16)` / `.score(16 samples)` back to back),
`ceiling` (the generator / energy session called directly at the HTTP service's batch size:
the samples/s no server on this machine can pass), `floor` (a bare uvicorn app answering canned
bytes of the same size, `floor_app.py`: what HTTP alone costs), then each engine (the built-in HTTP service,
TorchServe) at each number of concurrent clients, for `generate` (16 samples, .npy) and
`score` (16 samples, .npy): p50 / p99 latency, requests/s, samples/s, errors, and the load
generator's share of the CPU. Then the head-of-line check (a 1-sample request while 16 clients
ask for 1,024 samples each, against its idle latency), the goal ratios, and at 32 clients the
bound floor and ceiling put on any Python server of the model, 1 / (1/floor + 1/ceiling).

The load comes from `wrk` (C, one thread, keep-alive; Debian's `wrk` package) so the server
keeps the cores; without it, a lean Python client (`--client python`, shown in the rows).

    python benchmarks/load.py                                   # bundled mnist, both engines
    python benchmarks/load.py models/tiny --engines http --clients 1,8 --seconds 5
    python benchmarks/load.py mnist --clients 32 --seconds 60   # sustained load, 0 errors?
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_clients import (SAMPLES, Level, probe_latency, python_load,  # noqa: E402
                          started_floor, started_http, started_torchserve, wrk_load)


def in_process(model, seconds: float) -> list[Level]:
    """`generate(16, seed)` and `score(x16)` called back to back in this process."""
    x = model.generate(SAMPLES, seed=123)
    calls = {"generate": lambda i: model.generate(SAMPLES, seed=i),
             "score": lambda i: model.score(x)}
    rows = []
    for name, call in calls.items():
        for i in range(5):
            call(i)
        lat, start, i = [], time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            t = time.perf_counter()
            call(i)
            lat.append(time.perf_counter() - t)
            i += 1
        rows.append(Level.of("in-process", name, 1, lat, time.perf_counter() - start))
    return rows


def ceiling(model_dir: str, batch: int, parallel: int, seconds: float) -> list[Level]:
    """Samples/s of bare sessions (no latents, no encoding) at `batch` rows a call, `parallel`
    calls at once on one onnxruntime thread each, as the HTTP service runs them."""
    import threading

    from ebgen import load_model

    model = load_model(model_dir, device="cpu", threads=1)
    z = model.latents(batch, seed=1)
    x = model.generate_from_latents(z)
    rows = []
    for name, call in {"generate": lambda: model.generate_from_latents(z),
                       "score": lambda: model.energy(x)}.items():
        call()
        lat: list[float] = []
        start = time.perf_counter()

        def loop() -> None:
            while time.perf_counter() - start < seconds:
                t = time.perf_counter()
                call()
                lat.append(time.perf_counter() - t)

        threads = [threading.Thread(target=loop) for _ in range(parallel)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        level = Level.of(f"ceiling ({parallel} × batch {batch})", name, parallel, lat, wall)
        level.req_per_s = len(lat) * batch / SAMPLES / wall
        level.samples_per_s = batch * len(lat) / wall
        rows.append(level)
    return rows


def bench_engine(engine: str, urls: dict[str, str], headers: dict[str, str], bodies: dict,
                 args) -> list[Level]:
    rows = []
    for clients in args.clients:
        for endpoint in ("generate", "score"):
            content_type, body = bodies[endpoint]
            load = wrk_load if args.client == "wrk" else python_load
            level = load(urls[endpoint], body, content_type, headers, clients, args.seconds)
            level.engine, level.endpoint = engine, endpoint
            rows.append(level)
            print(level.markdown(), file=sys.stderr, flush=True)
    return rows


def head_of_line(url: str, headers: dict[str, str], args) -> dict[str, float]:
    """p50 of a 1-sample generate request idle, and while 16 clients ask for 1,024 each."""
    small = json.dumps({"num_samples": 1, "seed": 3, "format": "npy"}).encode()
    big = json.dumps({"num_samples": 1024, "seed": 4, "format": "npy"}).encode()
    idle = probe_latency(url, small, headers, seconds=min(5.0, args.seconds))
    load = wrk_load if args.client == "wrk" else python_load
    import threading

    background = threading.Thread(target=load, args=(url, big, "application/json", headers, 16,
                                                     args.seconds + 2.0), daemon=True)
    background.start()
    time.sleep(1.0)
    loaded = probe_latency(url, small, headers, seconds=args.seconds)
    background.join()
    return {"idle_p50_ms": 1e3 * float(np.median(idle)),
            "loaded_p50_ms": 1e3 * float(np.median(loaded)),
            "loaded_p99_ms": 1e3 * float(np.percentile(loaded, 99))}


def goal_ratios(rows: list[Level], hol: dict | None) -> list[str]:
    def find(engine_prefix: str, endpoint: str, clients: int) -> Level | None:
        return next((r for r in rows if r.engine.startswith(engine_prefix)
                     and r.endpoint == endpoint and r.clients == clients), None)

    lines = []
    for endpoint in ("generate", "score"):
        local, http1 = find("in-process", endpoint, 1), find("http", endpoint, 1)
        if local and http1:
            lines.append(f"{endpoint}: HTTP p50 at 1 client / in-process = "
                         f"{http1.p50_ms / local.p50_ms:.2f}× (goal ≤ 1.5×)")
        http32, ts32 = find("http", endpoint, 32), find("torchserve", endpoint, 32)
        if http32 and ts32:
            lines.append(f"{endpoint}: HTTP req/s at 32 clients / TorchServe = "
                         f"{http32.req_per_s / ts32.req_per_s:.2f}× (goal ≥ 1.5×)")
        floor32 = find("floor", endpoint, 32)
        top = next((r for r in rows if r.engine.startswith("ceiling") and r.endpoint == endpoint),
                   None)  # one row per endpoint, at however many parallel sessions
        if floor32 and top:
            bound = 1.0 / (1.0 / floor32.req_per_s + 1.0 / top.req_per_s)
            asked = f"; 1.5× TorchServe asks {1.5 * ts32.req_per_s:,.0f}" if ts32 else ""
            reached = f"; HTTP reaches {http32.req_per_s / bound:.0%} of it" if http32 else ""
            lines.append(f"{endpoint}: bound on any Python server at 32 clients, 1 / (1/floor "
                         f"+ 1/ceiling) = {bound:,.0f} req/s{asked}{reached}")
        if http32:
            lines.append(f"{endpoint}: HTTP p99 / p50 at 32 clients = "
                         f"{http32.p99_ms / http32.p50_ms:.2f}× (goal ≤ 3×)")
    if hol:
        lines.append(f"1-sample generate behind 16 × 1,024-sample ones: p50 "
                     f"{hol['loaded_p50_ms']:.1f} ms vs {hol['idle_p50_ms']:.1f} ms idle = "
                     f"{hol['loaded_p50_ms'] / hol['idle_p50_ms']:.2f}× (goal ≤ 5×)")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", default="mnist",
                   help="Model directory or bundled name (default: mnist).")
    p.add_argument("--engines", default="floor,http,torchserve",
                   help="Comma-separated: floor (bare uvicorn, canned answers), http, torchserve.")
    p.add_argument("--clients", default="1,8,32,128")
    p.add_argument("--seconds", type=float, default=10.0, help="Duration of each level.")
    p.add_argument("--workers", type=int, default=1, help="HTTP service worker processes.")
    p.add_argument("--client", choices=["wrk", "python"], default=None,
                   help="Load generator (default: wrk when on PATH).")
    p.add_argument("--serve-args", default="", help="Extra `ebgen serve` options for the HTTP "
                   "engine, e.g. '--max-batch-samples 128 --threads 1'.")
    p.add_argument("--ts-workers", type=int, default=2, help="TorchServe workers per model "
                   "(its best measured here: 2, one onnxruntime thread each).")
    p.add_argument("--ts-batch", type=int, default=8, help="TorchServe batch_size.")
    p.add_argument("--ts-delay-ms", type=int, default=5, help="TorchServe max_batch_delay.")
    p.add_argument("--ts-threads", type=int, default=None, help="onnxruntime threads per "
                   "TorchServe worker (default: cores / its workers).")
    p.add_argument("--max-queue", type=int, default=256, help="Queue per model of both engines "
                   "(above the most clients, so no level is refused).")
    p.add_argument("--ceiling-batch", type=int, default=64, help="Rows a call of the ceiling.")
    p.add_argument("--no-head-of-line", action="store_true")
    p.add_argument("--json", action="store_true", help="Also print the rows as JSON.")
    args = p.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    args.client = args.client or ("wrk" if shutil.which("wrk") else "python")

    from ebgen import load_model, resolve_model_path
    from ebgen.serve import codecs, service
    from ebgen.sessions import serving_threads

    model_dir = str(resolve_model_path(args.model))
    model = load_model(model_dir, device="cpu")  # as a user calls it: onnxruntime's threads
    x = model.generate(SAMPLES, seed=7)
    bodies = {"generate": ("application/json", json.dumps(
                  {"num_samples": SAMPLES, "seed": 1, "format": "npy"}).encode()),
              "score": ("application/x-npy", codecs.encode_npy(x))}
    answer_bytes = {"/generate": len(codecs.encode_npy(x)),
                    "/score": len(codecs.dumps(service.score_result(model, model.energy(x))))}
    rows = in_process(model, min(args.seconds, 5.0)) + ceiling(
        model_dir, args.ceiling_batch, serving_threads(args.workers) * args.workers, 3.0)
    hol = None
    with tempfile.TemporaryDirectory(prefix="ebgen-load-"):
        for engine in args.engines.split(","):
            if engine == "floor":
                with started_floor(args.workers, answer_bytes) as base:
                    urls = {"generate": f"{base}/generate", "score": f"{base}/score"}
                    rows += bench_engine(f"floor: bare uvicorn ({args.workers}w)", urls, {},
                                         bodies, args)
            elif engine == "http":
                extra = ["--max-queue", str(args.max_queue), *args.serve_args.split()]
                with started_http(model_dir, args.workers, extra) as base:
                    urls = {"generate": f"{base}/generate", "score": f"{base}/score"}
                    rows += bench_engine(f"http ({args.workers}w)", urls, {}, bodies, args)
                    if not args.no_head_of_line:
                        hol = head_of_line(urls["generate"], {}, args)
            elif engine == "torchserve":
                with started_torchserve(model_dir, args.ts_workers, args.ts_batch,
                                        args.ts_delay_ms, args.ts_threads,
                                        args.max_queue) as (urls, headers):
                    name = (f"torchserve ({args.ts_workers}w, b{args.ts_batch}/"
                            f"{args.ts_delay_ms}ms)")
                    rows += bench_engine(name, urls, headers, bodies, args)
            else:
                raise SystemExit(f"unknown engine {engine!r}: floor, http or torchserve")
    print(f"\n{SAMPLES} samples per request; model {args.model}; {os.cpu_count()} CPUs; "
          f"load from {args.client}; {args.seconds:g} s per level\n")
    print(Level.HEADER)
    for r in rows:
        print(r.markdown())
    print()
    for line in goal_ratios(rows, hol):
        print("- " + line)
    if args.json:
        print(json.dumps({"rows": [r.__dict__ for r in rows], "head_of_line": hol}, indent=2))


if __name__ == "__main__":
    main()
