"""What every route of the HTTP service shares: the model, its two micro-batchers, the limits,
and the count of requests in hand (a batch runs on the event loop only while it is one).

A route reads its body with `Backend.body` (size cap 413, slow-client timeout 408) and runs a
model with `Backend.run` (micro-batched; dropped, never computed, when its client hangs up).
On a CPU the model is loaded twice: sessions on `threads` each for batches side by side, and
sessions on all the worker's threads for a batch that runs by itself (`lone_model`).
Protocols stay apart from this: `ebgen.serve.http_service` holds the REST routes,
`ebgen.serve.v2` the Open Inference Protocol.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np
from starlette.requests import Request

from . import service
from .batching import MicroBatcher
from .validation import Limits, RequestError, check_body_size

log = logging.getLogger("uvicorn.error")  # shown by uvicorn's own log setup


class Backend:
    """The model (loaded at start unless given), a micro-batcher per network, the limits."""

    def __init__(self, model_path: str, device: str, limits: Limits, batching: dict[str, Any],
                 model: Any = None, on_batch: Callable[[str, int], None] | None = None,
                 threads: int | None = None,
                 on_energies: Callable[[Any, np.ndarray], None] | None = None) -> None:
        """`batching`: `MicroBatcher` keywords (max_batch_samples, max_batch_ms, max_delay_ms,
        max_queue, parallel_batches), the same for both networks. `on_energies(model,
        energies)` sees every request's scored energies (the drift metrics)."""
        self.model_path, self.device, self.limits = model_path, device, limits
        self.model, self.threads, self.on_energies = model, threads, on_energies
        self.ready = False
        #: Requests this worker holds now, counted as they arrive (`ebgen.serve.http_service`).
        self.in_flight = 0
        #: The model on all the worker's threads, for a batch that runs by itself (CPU only).
        self.lone_model: Any = None
        self.lone_threads = (threads or 1) * batching.get("parallel_batches", 1)
        runs = {"generator": service.run_generator_batch, "energy": service.run_energy_batch}
        self.batchers: dict[str, MicroBatcher] = {}  # one per network, by the routes' names
        for name, run in runs.items():
            b = MicroBatcher(lambda parts, run=run: run(self.model, parts), name=name,
                             run_lone=lambda parts, run=run: run(self.lone_model or self.model,
                                                                 parts),
                             alone=lambda: self.in_flight <= 1, **batching)
            if on_batch is not None:
                b.on_batch = lambda n, seconds, name=name: on_batch(name, n)
            self.batchers[name] = b

    async def start(self) -> None:
        """Load the model (unless given) and start both batchers; then ready."""
        if self.model is None:
            from ebgen import load_model

            self.model = load_model(self.model_path, self.device, self.threads)
            if self.lone_threads > (self.threads or 1) and "CUDAExecutionProvider" \
                    not in self.model.providers:
                self.lone_model = load_model(self.model_path, self.device, self.lone_threads)
        m = self.model
        log.info("ebgen HTTP service: model %s %s on %s (pid %d)", m.info.get("name"),
                 list(m.sample_shape), ", ".join(m.providers), os.getpid())
        for b in self.batchers.values():
            await b.start()
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        for b in self.batchers.values():
            await b.stop()

    async def check_ready(self) -> None:
        """503 while loading; a batcher that died is restarted (and logged) here."""
        if not self.ready:
            raise RequestError(503, "model is loading")
        for b in self.batchers.values():
            if not b.alive:
                await b.start()

    async def body(self, request: Request) -> bytes:
        """The body, refused with 413 as soon as it (or its Content-Length) passes the cap,
        and with 408 when it takes longer than `limits.body_timeout_s` to arrive."""
        limits = self.limits
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
            raise RequestError(408, f"request body not received within "
                                    f"{limits.body_timeout_s:g} s") from None
        return b"".join(chunks)

    async def run(self, name: str, request: Request, array: np.ndarray) -> np.ndarray:
        """`array` through network `name` (micro-batched), cancelled should the client hang up
        first: a queued request whose client has gone is never computed."""
        job = asyncio.ensure_future(self.batchers[name].submit(array))
        watch = asyncio.ensure_future(request.receive())  # after the body: only a disconnect
        try:
            await asyncio.wait({job, watch}, return_when=asyncio.FIRST_COMPLETED)
            if not job.done() and watch.done() and not watch.cancelled() \
                    and watch.result().get("type") == "http.disconnect":
                job.cancel()
                raise RequestError(499, "client closed the request")
            result = await job
            if name == "energy" and self.on_energies is not None:
                self.on_energies(self.model, result)
            return result
        finally:
            watch.cancel()
            if not job.done():
                job.cancel()
