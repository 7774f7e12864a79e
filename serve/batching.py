"""An asyncio micro-batcher: concurrent requests' arrays become shared onnxruntime calls.

A request is an array of samples (rows). One task schedules batches and runs up to
`parallel_batches` of them at once in worker threads (so the event loop keeps accepting
requests; on a CPU, batches side by side on one onnxruntime thread each beat one batch on
several threads, whose small ops parallelise poorly), so that:

- **No idle tax.** When a batch slot is free and nothing waits, a request starts at once.
- **What queued while the batches ran goes in the next one**, up to `max_batch_samples` rows
  and no more than fit in `max_batch_ms` by the running fit of batch time (`BatchTimer`).
- **Fair shares, in samples.** Smallest first, whole while they fit (never cut); big requests
  share the room left and run in chunks, so a small one behind them waits about one batch.
- **A lone batch** (none other running, nothing waiting) **gets the worker's cores**
  (`run_lone`). Batches run on the event loop, sparing two thread hops, when tiny
  (`INLINE_BATCH_S`) or lone while the server holds no other request (`alone()`, counted as
  requests arrive: a blocked loop reads none, so its queue would look empty and every batch
  run inline, one core's worth; README "Serving speed").
- **Waiting only where it pays.** With `max_delay_ms` > 0, a batch that is not full waits for
  more requests only while the arrival rate × one batch's fixed cost (`BatchTimer`) exceeds the
  requests in hand: a request that joins saves a batch's overhead; each waiting costs its
  wait. On a CPU (overhead ~0.1 ms) that is almost never; on a GPU under load, often.

A full queue is refused at once with 503 and a Retry-After hint instead of queueing without
bound: the time to work through what is queued now, from a running fit of a batch's seconds
against its rows (`BatchTimer`). Each request gets its own answer back (its chunks' answers
joined), or its own exception.

    batcher = MicroBatcher(lambda parts: [x * 2 for x in parts], max_batch_samples=64)
    await batcher.start()
    assert (await batcher.submit(np.ones(3)) == 2).all()
    await batcher.stop()
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .validation import RequestError

log = logging.getLogger(__name__)
#: A batch the fit says takes at most this long runs on the event loop (2-D models' batches).
INLINE_BATCH_S = 2e-4


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


@dataclass(eq=False)
class _Entry:
    """One request: its rows, its caller's future, the rows handed to batches so far and the
    answers of those that ran, by first row."""

    item: np.ndarray
    future: asyncio.Future
    taken: int = 0
    parts: dict[int, np.ndarray] = field(default_factory=dict)
    answered: int = 0

    @property
    def left(self) -> int:
        """Rows not yet handed to a batch."""
        return len(self.item) - self.taken


class MicroBatcher:
    """Runs submitted arrays through `run_batch(parts) -> answers` in shared calls.

    `run_batch` gets a list of arrays (requests, or chunks of them, along axis 0) and returns
    one answer per array, in order, each with as many rows; an answer that is an exception is
    raised to that request's caller alone. If `run_batch` itself raises, every request in that
    batch gets the exception. `run_lone`: the same for a batch that runs by itself; `alone()`:
    whether the server holds one request only (a lone batch within `max_batch_ms` runs inline).
    """

    def __init__(self, run_batch: Callable[[list[np.ndarray]], Sequence[np.ndarray | BaseException]],
                 max_batch_samples: int = 1024, max_delay_ms: float = 0.0, max_queue: int = 64,
                 name: str = "batch", max_batch_ms: float | None = None, parallel_batches: int = 1,
                 run_lone: Callable | None = None, alone: Callable[[], bool] | None = None):
        if max_batch_samples < 1 or max_queue < 1 or max_delay_ms < 0 or parallel_batches < 1 \
                or (max_batch_ms is not None and max_batch_ms <= 0):
            raise ValueError("need max_batch_samples >= 1, max_queue >= 1, max_delay_ms >= 0, "
                             "parallel_batches >= 1 and max_batch_ms > 0")
        self.run_batch, self.run_lone, self.alone = run_batch, run_lone, alone
        self.max_batch_samples = max_batch_samples
        self.max_batch_s = None if max_batch_ms is None else max_batch_ms / 1000.0
        self.parallel_batches = parallel_batches
        self.max_delay = max_delay_ms / 1000.0
        self.max_queue = max_queue
        self.name = name
        self._pending: list[_Entry] = []  # arrival order
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=parallel_batches,
                                        thread_name_prefix=f"ebgen-{name}")
        self._slots: asyncio.Semaphore | None = None
        self._warm = False
        self._batches: dict[asyncio.Task, tuple[float, float]] = {}  # running: (start, predicted)
        self.timer = BatchTimer(overhead=1e-4, per_unit=1e-5)
        self._gap = 1.0  # running mean of seconds between arrivals
        self._last_arrival = time.perf_counter()
        #: Called after every batch with (number of requests in it, seconds); for metrics.
        self.on_batch: Callable[[int, float], None] | None = None

    @property
    def queued(self) -> int:
        """Requests waiting now, in whole or in part (not those whose last rows are running)."""
        return sum(1 for entry in self._pending if entry.left > 0)

    @property
    def alive(self) -> bool:
        """Whether the batching task runs (readiness probes report it)."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the batching task on the running event loop; restart it should it have died
        (what was queued is kept and answered by the new task)."""
        if self._task is not None and self._task.done():
            if not self._task.cancelled() and self._task.exception() is not None:
                log.error("%s batcher died (%r); restarting it", self.name,
                          self._task.exception())
            self._task = None
        if self._task is None:
            self._wake = self._wake or asyncio.Event()
            self._slots = asyncio.Semaphore(self.parallel_batches - len(self._batches))
            self._task = asyncio.create_task(self._loop(), name=f"ebgen-{self.name}-batcher")

    async def stop(self) -> None:
        """Stop batching; callers still waiting get a 503."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception:  # it had died already: nothing left to stop
                pass
            self._task = None
        for batch in list(self._batches):
            batch.cancel()
        for entry in self._pending:
            if not entry.future.done():
                entry.future.set_exception(Overloaded(1, "server is shutting down"))
        self._pending = []
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def submit(self, item: np.ndarray) -> np.ndarray:
        """Queue `item` (rows along axis 0) and wait for its answer; 503 (`Overloaded`) when
        `max_queue` requests wait already."""
        if len(item) == 0:  # no rows would ever be planned for it: it would wait forever
            raise ValueError(f"{self.name}: a request needs at least one row")
        if not self.alive:
            await self.start()
        if self.queued >= self.max_queue:
            retry = self.retry_after()
            raise Overloaded(retry, f"server busy: {self.max_queue} requests queued for "
                                    f"{self.name}; retry in {retry} s")
        now = time.perf_counter()
        self._gap = 0.9 * self._gap + 0.1 * (now - self._last_arrival)
        self._last_arrival = now
        entry = _Entry(item, asyncio.get_running_loop().create_future())
        self._pending.append(entry)
        self._wake.set()
        return await entry.future

    def retry_after(self) -> int:
        """Whole seconds (≥ 1) until what is queued now, and the batch running, are through."""
        now = time.perf_counter()
        running = [max(0.0, predicted - (now - start)) for start, predicted
                   in self._batches.values()]
        rows = sum(entry.left for entry in self._pending)
        queued = self.timer.seconds(rows, -(-rows // self.batch_rows()))
        left = (sum(running) + queued) / self.parallel_batches
        return max(1, math.ceil(left))

    def batch_rows(self) -> int:
        """Rows the next batch may hold: `max_batch_samples`, and no more than fit in
        `max_batch_ms` by the running fit (at least one)."""
        if self.max_batch_s is None:
            return self.max_batch_samples
        fit = (self.max_batch_s - self.timer.overhead) / max(self.timer.per_unit, 1e-9)
        return int(max(1, min(self.max_batch_samples, fit)))

    def _plan(self) -> list[tuple[_Entry, int, int]]:
        """The next batch: (request, first row, end row) per part; requests whose callers have
        gone are dropped. Smallest first, whole while they fit; a big request (more rows than a
        batch) takes an even share of the room left; a small one that does not fit waits, whole,
        for the next batch. The oldest always gets rows (no starving behind smaller ones); a lone
        request's tail of up to half a batch goes with its last chunk."""
        self._pending = [e for e in self._pending if not e.future.done()]
        rows = room = self.batch_rows()
        waiting = [e for e in self._pending if e.left > 0]
        oldest, plan = (waiting[0] if waiting else None), []
        # Rows kept for the oldest until its turn, so smaller ones cannot take them all.
        reserve = min(oldest.left, max(1, rows // len(waiting))) if oldest else 0
        for i, entry in enumerate(sorted(waiting, key=lambda e: e.left)):
            if room <= 0:
                break
            if entry is oldest:
                reserve = 0
            free = room - reserve
            if free <= 0:
                continue
            share = max(1, free // (len(waiting) - i))
            lone_tail = len(waiting) == 1 and entry.left <= min(1.5 * free,
                                                                self.max_batch_samples)
            if entry.left <= free or lone_tail:
                take = entry.left
            elif entry.left <= rows and plan and entry is not oldest:
                continue  # whole, in the next batch
            else:
                take = min(entry.left, free, share)
            plan.append((entry, entry.taken, entry.taken + take))
            entry.taken += take
            room -= take
        return plan

    async def _fill(self) -> None:
        """Wait (up to `max_delay_ms`) for more requests while waiting pays: while one more
        request's saved batch overhead outweighs the wait of those in hand."""
        if self.max_delay <= 0:
            return
        deadline = time.perf_counter() + self.max_delay
        while sum(e.left for e in self._pending) < self.batch_rows():
            if self.timer.overhead / max(self._gap, 1e-6) < self.queued:
                return
            left = deadline - time.perf_counter()
            if left <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except asyncio.TimeoutError:
                return

    async def _loop(self) -> None:
        """Wait for requests and a free slot, plan a batch, start it; forever."""
        while True:
            while not self.queued:
                self._wake.clear()
                await self._wake.wait()
            await self._slots.acquire()
            try:
                await self._fill()
                plan = self._plan()
            except BaseException:
                self._slots.release()
                raise
            if not plan:
                self._slots.release()
                continue
            rows = sum(stop - start for _, start, stop in plan)
            batch = asyncio.create_task(self._run(plan, rows, self._slots))
            self._batches[batch] = (time.perf_counter(), self.timer.seconds(rows, 1))

    async def _run(self, plan: list[tuple[_Entry, int, int]], rows: int,
                   slots: asyncio.Semaphore) -> None:
        """One batch in a worker thread; its answers handed out, its slot freed."""
        start = time.perf_counter()
        try:
            parts = [e.item[a:b] for e, a, b in plan]
            lone = len(self._batches) <= 1 and not self.queued
            run = self.run_lone if lone and self.run_lone is not None else self.run_batch
            predicted = self.timer.seconds(rows, 1)
            if self._warm and (predicted <= INLINE_BATCH_S or lone and self.alone is not None
                               and predicted <= (self.max_batch_s or 0.0) and self.alone()):
                answers, seconds = self._timed(parts, run)  # quicker than two thread hops
            else:
                answers, seconds = await asyncio.get_running_loop().run_in_executor(
                    self._pool, self._timed, parts, run)
            if len(answers) != len(plan):
                raise RuntimeError(f"{self.name}: {len(answers)} answers for {len(plan)} parts")
            if self._warm:
                self.timer.add(rows, seconds)
            self._warm = True  # a first call (allocations, caches) is no guide to the rest
        except Exception as err:  # noqa: BLE001 - handed to every request of the batch
            log.exception("%s batch of %d parts failed", self.name, len(plan))
            answers = [err] * len(plan)
        finally:
            self._batches.pop(asyncio.current_task(), None)
            slots.release()
        if self.on_batch is not None:
            self.on_batch(len(plan), time.perf_counter() - start)
        for (entry, first, stop), answer in zip(plan, answers):
            self._answer(entry, first, stop, answer)

    def _timed(self, parts: list[np.ndarray], run: Callable) -> tuple[Sequence, float]:
        """`run(parts)` and the seconds it took itself (no thread hops)."""
        start = time.perf_counter()
        answers = run(parts)
        return answers, time.perf_counter() - start

    def _answer(self, entry: _Entry, first: int, stop: int,
                answer: np.ndarray | BaseException) -> None:
        """Keep one part's answer; a request whose parts are all in (or one failed) is done."""
        if entry.future.done():
            return
        if isinstance(answer, BaseException):
            entry.future.set_exception(answer)
        else:
            entry.parts[first] = answer
            entry.answered += stop - first
            if entry.answered < len(entry.item):
                return
            parts = [entry.parts[k] for k in sorted(entry.parts)]
            entry.future.set_result(parts[0] if len(parts) == 1 else np.concatenate(parts))
        if entry in self._pending:
            self._pending.remove(entry)
