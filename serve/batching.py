"""An asyncio micro-batcher: concurrent requests become one onnxruntime call.

Requests wait in a bounded queue; a worker task takes the first, then keeps collecting until it
holds `max_batch_size` requests or `max_delay_ms` have passed since the first arrived, and runs
the batch function once in a worker thread (so the event loop keeps accepting requests). Each
request gets its own answer back, or its own exception. A full queue is refused at once with
503 and a Retry-After hint instead of queueing without bound: the time to work through what is
queued now, from a running fit of a batch's seconds against its size (`BatchTimer`).

    batcher = MicroBatcher(lambda items: [x * 2 for x in items], max_batch_size=8)
    await batcher.start()
    assert await batcher.submit(21) == 42
    await batcher.stop()
"""
from __future__ import annotations

import asyncio
import logging
import math
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


class BatchTimer:
    """A running fit `seconds ≈ overhead + per_unit × units` of the batches run so far.

    Exponentially weighted least squares (recent batches count most), so a Retry-After drawn
    from it follows the work actually queued rather than an average over batches of any size.
    """

    def __init__(self, decay: float = 0.9, overhead: float = 0.005, per_unit: float = 1e-4):
        self.decay = decay
        self.overhead = overhead
        self.per_unit = per_unit
        self._sums = [0.0] * 5  # weight, Σx, Σy, Σx², Σxy

    def add(self, units: int, seconds: float) -> None:
        """Fold in one batch of `units` work units that took `seconds`."""
        w, sx, sy, sxx, sxy = (v * self.decay for v in self._sums)
        x, y = float(units), float(seconds)
        self._sums = [w + 1, sx + x, sy + y, sxx + x * x, sxy + x * y]
        w, sx, sy, sxx, sxy = self._sums
        mean_x, mean_y = sx / w, sy / w
        var_x = sxx / w - mean_x * mean_x
        if var_x > 1e-9 * max(1.0, mean_x * mean_x):
            slope = (sxy / w - mean_x * mean_y) / var_x
            if slope > 0:
                self.per_unit = slope
                self.overhead = max(0.0, mean_y - slope * mean_x)
                return
        # One batch size so far (or a fit sloping down): split its time by the prior overhead.
        self.overhead = min(self.overhead, mean_y)
        self.per_unit = max(mean_y - self.overhead, 0.0) / max(mean_x, 1.0)

    def seconds(self, units: int, batches: int) -> float:
        """Predicted seconds for `batches` batches holding `units` units in all."""
        return batches * self.overhead + units * self.per_unit


class MicroBatcher(Generic[T, R]):
    """Collects submitted items into batches for `run_batch(items) -> answers`.

    `run_batch` gets a list of items and returns one answer per item, in order; an answer
    that is an exception is raised to that item's caller alone. If `run_batch` itself raises,
    every caller of that batch gets the exception. `cost(item)` is an item's work in units
    (e.g. its number of samples; 1 by default), for Retry-After.
    """

    def __init__(self, run_batch: Callable[[list[T]], Sequence[R | BaseException]],
                 max_batch_size: int = 8, max_delay_ms: float = 5.0, max_queue: int = 64,
                 name: str = "batch", cost: Callable[[T], int] | None = None):
        if max_batch_size < 1 or max_queue < 1 or max_delay_ms < 0:
            raise ValueError("need max_batch_size >= 1, max_queue >= 1, max_delay_ms >= 0")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay_ms / 1000.0
        self.max_queue = max_queue
        self.name = name
        #: (item, its future, its cost in units), in arrival order
        self._queue: asyncio.Queue[tuple[T, asyncio.Future, int]] | None = None
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ebgen-{name}")
        self.cost = cost or (lambda item: 1)
        self.timer = BatchTimer()
        self._queued_units = 0  # work units waiting in the queue
        self._running: tuple[float, float] | None = None  # (start, predicted seconds) of a batch
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
            _, fut, _ = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(Overloaded(1, "server is shutting down"))
        self._queued_units = 0
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def submit(self, item: T) -> R:
        """Queue `item` and wait for its answer; 503 (`Overloaded`) when the queue is full."""
        if not self.alive:
            await self.start()
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        units = self._units(item)
        try:
            self._queue.put_nowait((item, fut, units))
        except asyncio.QueueFull:
            retry = self.retry_after()
            raise Overloaded(retry, f"server busy: {self.max_queue} requests queued for "
                                    f"{self.name}; retry in {retry} s") from None
        self._queued_units += units
        return await fut

    def retry_after(self) -> int:
        """Whole seconds (≥ 1) until what is queued now, and the batch running, are through."""
        left = 0.0
        if self._running is not None:
            start, predicted = self._running
            left = max(0.0, predicted - (time.perf_counter() - start))
        batches = -(-self.queued // self.max_batch_size)
        left += self.timer.seconds(self._queued_units, batches)
        return max(1, math.ceil(left))

    def _units(self, item: T) -> int:
        try:
            return max(1, int(self.cost(item)))
        except Exception:  # noqa: BLE001 - a cost that cannot be read counts as one unit
            return 1

    def _taken(self, entry: tuple[T, asyncio.Future, int]) -> tuple[T, asyncio.Future, int]:
        """Bookkeeping for an entry just taken off the queue."""
        self._queued_units = max(0, self._queued_units - entry[2])
        return entry

    async def _collect(self) -> list[tuple[T, asyncio.Future, int]]:
        """The next batch: the first waiting item plus whatever arrives before the deadline."""
        batch = [self._taken(await self._queue.get())]
        deadline = time.monotonic() + self.max_delay
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._taken(self._queue.get_nowait()))
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(self._taken(await asyncio.wait_for(self._queue.get(), left)))
            except asyncio.TimeoutError:
                break
        return batch

    async def _loop(self) -> None:
        """Collect, run in the worker thread, hand out answers; forever."""
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            live = [(item, fut) for item, fut, _ in batch if not fut.cancelled()]
            if not live:
                continue
            units = sum(cost for _, fut, cost in batch if not fut.cancelled())
            start = time.perf_counter()
            self._running = (start, self.timer.seconds(units, 1))
            try:
                answers = await loop.run_in_executor(self._pool, self.run_batch,
                                                     [item for item, _ in live])
                if len(answers) != len(live):
                    raise RuntimeError(f"{self.name}: {len(answers)} answers for "
                                       f"{len(live)} requests")
                self.timer.add(units, time.perf_counter() - start)
            except Exception as err:  # noqa: BLE001 - handed to every caller of the batch
                log.exception("%s batch of %d failed", self.name, len(live))
                answers = [err] * len(live)
            finally:
                self._running = None
            seconds = time.perf_counter() - start
            if self.on_batch is not None:
                self.on_batch(len(live), seconds)
            for (_, fut), answer in zip(live, answers):
                if fut.done():
                    continue
                if isinstance(answer, BaseException):
                    fut.set_exception(answer)
                else:
                    fut.set_result(answer)
