"""An asyncio micro-batcher: concurrent requests become one onnxruntime call.

Requests wait in a bounded queue; a worker task takes the first, then keeps collecting until it
holds `max_batch_size` requests or `max_delay_ms` have passed since the first arrived, and runs
the batch function once in a worker thread (so the event loop keeps accepting requests). Each
request gets its own answer back, or its own exception. A full queue is refused at once with
503 and a Retry-After hint instead of queueing without bound.

    batcher = MicroBatcher(lambda items: [x * 2 for x in items], max_batch_size=8)
    await batcher.start()
    assert await batcher.submit(21) == 42
    await batcher.stop()
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from .validation import RequestError

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger(__name__)


class Overloaded(RequestError):
    """503: the queue is full; `retry_after` seconds is a fair time to wait."""

    def __init__(self, retry_after: int, reason: str):
        super().__init__(503, reason)
        self.retry_after = int(retry_after)


class MicroBatcher(Generic[T, R]):
    """Collects submitted items into batches for `run_batch(items) -> answers`.

    `run_batch` gets a list of items and returns one answer per item, in order; an answer
    that is an exception is raised to that item's caller alone. If `run_batch` itself raises,
    every caller of that batch gets the exception.
    """

    def __init__(self, run_batch: Callable[[list[T]], Sequence[R | BaseException]],
                 max_batch_size: int = 8, max_delay_ms: float = 5.0, max_queue: int = 64,
                 name: str = "batch"):
        if max_batch_size < 1 or max_queue < 1 or max_delay_ms < 0:
            raise ValueError("need max_batch_size >= 1, max_queue >= 1, max_delay_ms >= 0")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay_ms / 1000.0
        self.max_queue = max_queue
        self.name = name
        self._queue: asyncio.Queue[tuple[T, asyncio.Future]] | None = None
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ebgen-{name}")
        self._batch_seconds = 0.05  # running estimate of one batch's time, for Retry-After
        #: Called after every batch with (number of items, seconds); for metrics.
        self.on_batch: Callable[[int, float], None] | None = None

    @property
    def queued(self) -> int:
        """Items waiting now."""
        return self._queue.qsize() if self._queue is not None else 0

    @property
    def alive(self) -> bool:
        """Whether the collecting task runs (readiness probes report it)."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the collecting task on the running event loop; restart it should it have
        died (what was queued is kept and answered by the new task)."""
        if self._task is not None and self._task.done():
            if not self._task.cancelled() and self._task.exception() is not None:
                log.error("%s batcher died (%r); restarting it", self.name,
                          self._task.exception())
            self._task = None
        if self._task is None:
            if self._queue is None:
                self._queue = asyncio.Queue(maxsize=self.max_queue)
            self._task = asyncio.create_task(self._loop(), name=f"ebgen-{self.name}-batcher")

    async def stop(self) -> None:
        """Stop collecting; callers still waiting get a 503."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception:  # it had died already: nothing left to stop
                pass
            self._task = None
        while self._queue is not None and not self._queue.empty():
            _, fut = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(Overloaded(1, "server is shutting down"))
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def submit(self, item: T) -> R:
        """Queue `item` and wait for its answer; 503 (`Overloaded`) when the queue is full."""
        if not self.alive:
            await self.start()
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((item, fut))
        except asyncio.QueueFull:
            batches = self.max_queue / self.max_batch_size + 1
            retry = max(1, round(batches * self._batch_seconds + 0.5))
            raise Overloaded(retry, f"server busy: {self.max_queue} requests queued for "
                                    f"{self.name}; retry in {retry} s") from None
        return await fut

    async def _collect(self) -> list[tuple[T, asyncio.Future]]:
        """The next batch: the first waiting item plus whatever arrives before the deadline."""
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_delay
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        return batch

    async def _loop(self) -> None:
        """Collect, run in the worker thread, hand out answers; forever."""
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            live = [(item, fut) for item, fut in batch if not fut.cancelled()]
            if not live:
                continue
            start = time.perf_counter()
            try:
                answers = await loop.run_in_executor(self._pool, self.run_batch,
                                                     [item for item, _ in live])
                if len(answers) != len(live):
                    raise RuntimeError(f"{self.name}: {len(answers)} answers for "
                                       f"{len(live)} requests")
            except Exception as err:  # noqa: BLE001 - handed to every caller of the batch
                log.exception("%s batch of %d failed", self.name, len(live))
                answers = [err] * len(live)
            seconds = time.perf_counter() - start
            self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * seconds
            if self.on_batch is not None:
                self.on_batch(len(live), seconds)
            for (_, fut), answer in zip(live, answers):
                if fut.done():
                    continue
                if isinstance(answer, BaseException):
                    fut.set_exception(answer)
                else:
                    fut.set_result(answer)
