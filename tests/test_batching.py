"""The micro-batcher of the HTTP service: batches, a full queue refused with a Retry-After that
follows the work queued, and a dead collecting task restarted."""
from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from ebgen.serve import service
from ebgen.serve.batching import BatchTimer, MicroBatcher, Overloaded
from ebgen.serve.validation import RequestError


def test_micro_batcher_batches_and_refuses_when_full():
    seen: list[int] = []
    gate = threading.Event()

    def run(items):
        gate.wait(5)
        seen.append(len(items))
        return [RequestError(422, "odd") if i % 2 else i * 10 for i in items]

    async def main():
        b = MicroBatcher(run, max_batch_size=4, max_delay_ms=50, max_queue=4)
        await b.start()
        tasks = [asyncio.create_task(b.submit(i)) for i in range(4)]
        await asyncio.sleep(0.2)          # first batch of 4 taken, stuck on the gate
        more = [asyncio.create_task(b.submit(i)) for i in range(4, 8)]
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded) as full:   # 4 waiting: the queue (4) is full
            await b.submit(99)
        gate.set()
        results = await asyncio.gather(*tasks, *more, return_exceptions=True)
        await b.stop()
        return full.value, results

    full, results = asyncio.run(main())
    assert full.status == 503 and full.retry_after >= 1
    assert service.Reply.error(full).headers == {"Retry-After": str(full.retry_after)}
    assert seen == [4, 4]
    assert [r if not isinstance(r, RequestError) else r.status for r in results] == \
        [0, 422, 20, 422, 40, 422, 60, 422]


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
    sample costs 2 ms: a queue of 4 one-sample requests says 1 s, a queue of 4 requests of
    1,000 samples (≈ 8 s of work) says about 8 s, from the same recent history."""
    gate = threading.Event()

    def run(items):
        gate.wait(10)
        return list(items)

    async def refusal_when_queued(b: MicroBatcher, size: int) -> int:
        """Retry-After of the request refused when 4 of `size` samples wait behind one."""
        gate.clear()
        blocker = asyncio.create_task(b.submit(np.zeros(1)))
        await asyncio.sleep(0.1)                      # running, stuck on the gate
        queued = [asyncio.create_task(b.submit(np.zeros(size))) for _ in range(4)]
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded) as refused:
            await b.submit(np.zeros(1))
        gate.set()
        await asyncio.gather(blocker, *queued)
        return refused.value.retry_after

    async def main():
        b = MicroBatcher(run, max_batch_size=1, max_delay_ms=0, max_queue=4, cost=len)
        for units in (1, 10, 100, 1000):
            b.timer.add(units, 0.002 * units)
        await b.start()
        little = await refusal_when_queued(b, 1)
        lot = await refusal_when_queued(b, 1000)
        await b.stop()
        return little, lot

    little, lot = asyncio.run(main())
    assert little == 1
    assert 7 <= lot <= 10


def test_a_batcher_whose_task_died_is_restarted_and_answers():
    async def main():
        b = MicroBatcher(lambda items: [i + 1 for i in items], max_batch_size=4)
        await b.start()
        real_collect = b._collect

        async def broken():
            raise RuntimeError("a bug in the collecting loop")

        b._collect = broken
        await asyncio.sleep(0.01)             # the task dies
        dead = not b.alive
        b._collect = real_collect
        answer = await asyncio.wait_for(b.submit(41), 5)   # restarted, not hung
        alive = b.alive
        await b.stop()
        return dead, answer, alive

    dead, answer, alive = asyncio.run(main())
    assert dead and answer == 42 and alive
