"""The micro-batcher of the HTTP service: no idle wait, batches of what queued, fair shares in
samples (big requests in chunks), waiting only where it pays, a full queue refused with a
Retry-After that follows the work queued, and a dead batching task restarted."""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from ebgen.serve import service
from ebgen.serve.batching import BatchTimer, MicroBatcher, Overloaded
from ebgen.serve.validation import RequestError


def _rows(n: int, value: float = 0.0) -> np.ndarray:
    return np.full(n, value, dtype=np.float32)


def test_batches_what_queued_and_refuses_when_full():
    seen: list[list[int]] = []
    gate = threading.Event()

    def run(parts):
        gate.wait(5)
        seen.append([len(p) for p in parts])
        return [RequestError(422, "odd") if p[0] % 2 else p * 10 for p in parts]

    async def main():
        b = MicroBatcher(run, max_batch_samples=64, max_delay_ms=0, max_queue=4)
        await b.start()
        first = asyncio.create_task(b.submit(_rows(1, 0)))
        await asyncio.sleep(0.1)             # running at once, stuck on the gate
        more = [asyncio.create_task(b.submit(_rows(2, i))) for i in range(1, 5)]
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded) as full:   # 4 waiting: the queue (4) is full
            await b.submit(_rows(1))
        gate.set()
        results = await asyncio.gather(first, *more, return_exceptions=True)
        await b.stop()
        return full.value, results

    full, results = asyncio.run(main())
    assert full.status == 503 and full.retry_after >= 1
    assert service.Reply.error(full).headers == {"Retry-After": str(full.retry_after)}
    assert seen == [[1], [2, 2, 2, 2]]    # what queued while the first ran: one batch
    assert [r.status if isinstance(r, RequestError) else r.tolist() for r in results] == \
        [[0.0], 422, [20.0, 20.0], 422, [40.0, 40.0]]


def test_a_lone_request_does_not_wait_for_a_batch_to_fill():
    """Issue 16: every request waited max_delay_ms after the first, even with nothing else
    queued. Here the ceiling is 2 s and nothing else comes: the answer is immediate."""
    async def main():
        b = MicroBatcher(lambda parts: list(parts), max_batch_samples=64, max_delay_ms=2000)
        await b.start()
        start = time.perf_counter()
        answer = await b.submit(_rows(3, 7))
        took = time.perf_counter() - start
        await b.stop()
        return answer, took

    answer, took = asyncio.run(main())
    assert answer.tolist() == [7, 7, 7] and took < 1.0


def test_big_requests_run_in_chunks_and_a_small_one_is_not_stuck_behind_them():
    """Issue 16: a 1-sample request queued behind 1,024-sample ones waited for all of them. Now
    every batch holds at most max_batch_samples rows, shared evenly: the small request is in
    the very next batch, and each big answer is its chunks' answers joined in order."""
    batches: list[list[int]] = []
    gate = threading.Event()

    def run(parts):
        gate.wait(5)
        batches.append([len(p) for p in parts])
        return [p * 2 for p in parts]

    async def main():
        b = MicroBatcher(run, max_batch_samples=64, max_delay_ms=0)
        await b.start()
        blocker = asyncio.create_task(b.submit(_rows(1)))
        await asyncio.sleep(0.1)
        big = [asyncio.create_task(b.submit(np.arange(1000, dtype=np.float32) + k))
               for k in range(4)]
        await asyncio.sleep(0.02)
        small = asyncio.create_task(b.submit(_rows(1, 5)))
        await asyncio.sleep(0.02)
        gate.set()
        answers = await asyncio.gather(blocker, small, *big)
        await b.stop()
        return answers

    answers = asyncio.run(main())
    assert all(sum(batch) <= 64 for batch in batches)
    assert batches[1][0] == 1 and len(batches[1]) == 5       # the small one, first, at once
    assert answers[1].tolist() == [10.0]
    for k, answer in enumerate(answers[2:]):
        np.testing.assert_array_equal(answer, 2 * (np.arange(1000) + k))
    assert sum(map(sum, batches)) == 1 + 1 + 4000


@pytest.mark.parametrize("overhead, together", [(1.0, True), (1e-5, False)])
def test_waits_for_more_only_where_a_batch_overhead_pays_for_it(overhead, together):
    """A batch waits (up to max_delay_ms) only while arrival rate × a batch's overhead is more
    than the requests in hand: a costly batch (1 s) under frequent arrivals waits for the
    second request; a cheap one (10 µs) goes at once."""
    batches: list[int] = []

    def run(parts):
        batches.append(len(parts))
        return list(parts)

    async def main():
        b = MicroBatcher(run, max_batch_samples=64, max_delay_ms=500)
        b.timer.overhead, b.timer.per_unit = overhead, 1e-6
        await b.start()
        b._gap = 0.001            # requests have been arriving every millisecond
        first = asyncio.create_task(b.submit(_rows(1)))
        await asyncio.sleep(0.05)
        b._gap = 0.001
        second = asyncio.create_task(b.submit(_rows(1)))
        await asyncio.gather(first, second)
        await b.stop()

    asyncio.run(main())
    assert batches == ([2] if together else [1, 1])


def test_batch_timer_fits_overhead_and_cost_per_unit():
    timer = BatchTimer()
    for units in [1, 64, 8, 1024, 1, 256, 2, 1024] * 3:
        timer.add(units, 0.01 + 0.002 * units)
    assert timer.overhead == pytest.approx(0.01, rel=1e-3)
    assert timer.per_unit == pytest.approx(0.002, rel=1e-3)
    assert timer.seconds(1000, 2) == pytest.approx(2.02, rel=1e-3)
    single = BatchTimer()
    single.add(100, 0.5)                   # one batch size seen: no fit yet, but no nonsense
    assert 0 < single.seconds(100, 1) <= 0.5 + 1e-9


def test_retry_after_follows_the_work_queued_not_an_average():
    """Issue 15: Retry-After was a stale average of batch times, whatever was queued. Here a
    sample costs 5 ms: a queue of 4 one-sample requests says 1 s, a queue of 4 requests of
    1,000 samples (≈ 20 s of work) says about 20 s, from the same recent history."""
    gate = threading.Event()

    def run(parts):
        gate.wait(10)
        return list(parts)

    async def refusal_when_queued(b: MicroBatcher, size: int) -> int:
        """Retry-After of the request refused when 4 of `size` samples wait behind one."""
        gate.clear()
        blocker = asyncio.create_task(b.submit(_rows(1)))
        await asyncio.sleep(0.1)                      # running, stuck on the gate
        queued = [asyncio.create_task(b.submit(_rows(size))) for _ in range(4)]
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded) as refused:
            await b.submit(_rows(1))
        gate.set()
        await asyncio.gather(blocker, *queued)
        return refused.value.retry_after

    async def main():
        b = MicroBatcher(run, max_batch_samples=1000, max_delay_ms=0, max_queue=4)
        for units in (1, 10, 100, 1000):
            b.timer.add(units, 0.005 * units)
        await b.start()
        little = await refusal_when_queued(b, 1)
        lot = await refusal_when_queued(b, 1000)
        await b.stop()
        return little, lot

    little, lot = asyncio.run(main())
    assert little == 1
    assert 18 <= lot <= 24


def test_a_batcher_whose_task_died_is_restarted_and_answers():
    async def main():
        b = MicroBatcher(lambda parts: [p + 1 for p in parts], max_batch_samples=4)
        await b.start()
        real_plan = b._plan

        def broken():
            raise RuntimeError("a bug in the batching loop")

        b._plan = broken
        dead_after = asyncio.create_task(b.submit(_rows(1, 41)))
        await asyncio.sleep(0.05)             # the task dies on that request
        dead = not b.alive
        b._plan = real_plan
        answer = await asyncio.wait_for(b.submit(_rows(1, 1)), 5)   # restarted, not hung
        first = await asyncio.wait_for(dead_after, 5)               # and the first is answered
        alive = b.alive
        await b.stop()
        return dead, answer, first, alive

    dead, answer, first, alive = asyncio.run(main())
    assert dead and answer.tolist() == [2.0] and first.tolist() == [42.0] and alive


def test_parallel_batches_run_side_by_side_and_chunks_rejoin_in_order():
    """With two slots, a second request starts while the first still runs; a request cut into
    chunks gets them back in row order even when a later chunk finishes first."""
    inside = threading.Semaphore(0)
    release = {0: threading.Event(), 1: threading.Event()}
    calls = []

    def run(parts):
        index = len(calls)
        calls.append([len(p) for p in parts])
        inside.release()
        if index in release:
            release[index].wait(5)
        return [p + 100 for p in parts]

    async def main():
        b = MicroBatcher(run, max_batch_samples=4, max_delay_ms=0, parallel_batches=2)
        await b.start()
        big = asyncio.create_task(b.submit(np.arange(8, dtype=np.float32)))
        both_in = await asyncio.to_thread(lambda: inside.acquire(timeout=5)
                                          and inside.acquire(timeout=5))
        release[1].set()                     # the second chunk finishes first
        await asyncio.sleep(0.05)
        release[0].set()
        answer = await asyncio.wait_for(big, 5)
        await b.stop()
        return both_in, answer

    both_in, answer = asyncio.run(main())
    assert both_in and calls[:2] == [[4], [4]]
    np.testing.assert_array_equal(answer, np.arange(8) + 100)


def test_a_batch_holds_no_more_rows_than_fit_in_its_time_budget():
    batches: list[int] = []

    def run(parts):
        batches.append(sum(len(p) for p in parts))
        return list(parts)

    async def main():
        b = MicroBatcher(run, max_batch_samples=1000, max_batch_ms=10, max_delay_ms=0)
        b.timer.overhead, b.timer.per_unit = 0.0, 0.001      # a row costs 1 ms: 10 a batch
        b.timer.add = lambda units, seconds: None             # keep that fit
        await b.start()
        answer = await b.submit(np.arange(35, dtype=np.float32))
        await b.stop()
        return answer

    answer = asyncio.run(main())
    assert batches == [10, 10, 15]  # a lone request's tail under half a batch goes with the last
    np.testing.assert_array_equal(answer, np.arange(35))


def test_an_empty_request_is_refused_not_left_waiting():
    async def main():
        b = MicroBatcher(lambda parts: list(parts))
        with pytest.raises(ValueError, match="at least one row"):
            await asyncio.wait_for(b.submit(np.zeros((0, 2), np.float32)), 5)
        await b.stop()

    asyncio.run(main())


def test_requests_that_fit_a_batch_are_never_cut_into_chunks():
    """Issue 16: with a batch budget of 20 rows, 8 waiting requests of 16 rows each got one row
    per batch each (16 batches before any answer). Now each goes in whole, one a batch."""
    batches: list[list[int]] = []
    gate = threading.Event()

    def run(parts):
        gate.wait(5)
        batches.append([len(p) for p in parts])
        return list(parts)

    async def main():
        b = MicroBatcher(run, max_batch_samples=20, max_delay_ms=0)
        await b.start()
        blocker = asyncio.create_task(b.submit(_rows(1)))
        await asyncio.sleep(0.1)
        waiting = [asyncio.create_task(b.submit(_rows(16, k))) for k in range(8)]
        await asyncio.sleep(0.02)
        gate.set()
        return await asyncio.gather(blocker, *waiting)

    answers = asyncio.run(main())
    assert batches[1:] == [[16]] * 8
    assert [a.tolist() for a in answers[1:]] == [[float(k)] * 16 for k in range(8)]


@pytest.mark.parametrize("parallel, seconds_per_row, inline", [
    (1, 1e-6, True),    # 16 µs a batch: the hop to a thread would cost more
    (2, 1e-6, True),
    (1, 1e-4, False),   # 1.6 ms a batch: a thread, so the loop keeps reading requests
    (2, 1e-4, False),
])
def test_only_tiny_batches_run_on_the_event_loop(
        parallel, seconds_per_row, inline):
    threads: list[int] = []

    def run(parts):
        threads.append(threading.get_ident())
        return list(parts)

    async def main():
        b = MicroBatcher(run, max_batch_samples=64, max_delay_ms=0, parallel_batches=parallel)
        b.timer.overhead, b.timer.per_unit = 0.0, seconds_per_row
        b.timer.add = lambda units, seconds: None             # keep that fit
        await b.start()
        for _ in range(3):
            await b.submit(_rows(16))
        await b.stop()
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert threads[0] != loop_thread                         # the first batch warms up apart
    assert all((t == loop_thread) == inline for t in threads[1:])


def test_a_lone_requests_tail_never_passes_max_batch_samples():
    batches: list[int] = []

    def run(parts):
        batches.append(sum(len(p) for p in parts))
        return list(parts)

    async def main():
        b = MicroBatcher(run, max_batch_samples=1024, max_delay_ms=0)
        await b.start()
        answer = await b.submit(np.arange(1500, dtype=np.float32))
        await b.stop()
        return answer

    answer = asyncio.run(main())
    assert batches == [1024, 476]
    np.testing.assert_array_equal(answer, np.arange(1500))


def test_the_oldest_request_gets_rows_however_many_smaller_ones_fill_the_batch():
    """Smaller requests go first, whole; they must not take every row of every batch from a big
    request that waits longest."""
    batches: list[list[tuple[int, float]]] = []   # (rows, value) per part: the big one is 9s
    gate = threading.Event()

    def run(parts):
        gate.wait(5)
        batches.append([(len(p), float(p[0])) for p in parts])
        return list(parts)

    async def main():
        b = MicroBatcher(run, max_batch_samples=40, max_delay_ms=0)
        await b.start()
        blocker = asyncio.create_task(b.submit(_rows(1)))
        await asyncio.sleep(0.1)
        big = asyncio.create_task(b.submit(_rows(100, 9)))
        await asyncio.sleep(0.02)
        small = [asyncio.create_task(b.submit(_rows(10, k))) for k in range(8)]
        await asyncio.sleep(0.02)
        gate.set()
        return await asyncio.gather(blocker, big, *small)

    answers = asyncio.run(main())
    assert all(sum(n for n, _ in batch) <= 40 for batch in batches)
    assert (10, 9.0) in batches[1] and len(batches[1]) == 4  # 3 small ones whole + a big chunk
    assert answers[1].tolist() == [9.0] * 100


def test_a_lone_batch_gets_the_lone_runner_and_runs_on_the_loop_only_when_alone():
    """Issue 16: at one client a batch ran on one of the worker's threads, in a thread hop
    away. A batch running by itself now goes through `run_lone` (the worker's cores), on the
    event loop itself while the server holds no other request; batches side by side do not."""
    calls: list[tuple[str, str, int]] = []
    gate = threading.Event()
    server_requests = [1]

    def runner(kind):
        def run(parts):
            calls.append((kind, threading.current_thread().name, len(parts[0])))
            if len(parts[0]) == 5:
                gate.wait(5)
            return list(parts)
        return run

    async def main():
        b = MicroBatcher(runner("shared"), max_batch_samples=64, max_delay_ms=0,
                         max_batch_ms=50, parallel_batches=2, run_lone=runner("lone"),
                         alone=lambda: server_requests[0] <= 1)
        b.timer.overhead, b.timer.per_unit = 1e-3, 1e-5   # 1 ms a batch: past "tiny"
        b.timer.add = lambda units, seconds: None         # keep that fit
        await b.start()
        await b.submit(_rows(1))                         # first call: warms up (a thread)
        await b.submit(_rows(2))                         # alone: on the loop
        server_requests[0] = 3
        await b.submit(_rows(3))                         # lone, but others arrived: a thread
        stuck = asyncio.create_task(b.submit(_rows(5)))  # lone, held on the gate
        await asyncio.sleep(0.1)
        await b.submit(_rows(4))                         # beside it: shared, in a thread
        gate.set()
        await stuck
        await b.stop()

    asyncio.run(main())
    loop_thread = threading.main_thread().name
    by_rows = {rows: (kind, thread) for kind, thread, rows in calls}
    assert by_rows[1][0] == "lone" and by_rows[1][1] != loop_thread
    assert by_rows[2] == ("lone", loop_thread)
    assert by_rows[3][0] == "lone" and by_rows[3][1] != loop_thread
    assert by_rows[5][0] == "lone" and by_rows[4][0] == "shared"
    assert by_rows[4][1] != loop_thread
