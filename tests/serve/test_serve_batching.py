"""Micro-batching: concurrent items share calls of the scorer, answers go back to their own callers."""

import asyncio
import threading
import time

import pytest

from dualsight_hf.serve.batching import MicroBatcher


def run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_items_share_batches_and_keep_their_answers():
    calls = []

    def score(items):
        calls.append(list(items))
        time.sleep(0.02)  # the model is busy: later items queue up and go together
        return [item * 10 for item in items]

    async def main():
        batcher = MicroBatcher(score, max_batch_size=4, max_wait_ms=20)
        batcher.start()
        answers = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        await batcher.stop()
        return answers

    assert run(main()) == [i * 10 for i in range(10)]
    assert sorted(item for call in calls for item in call) == list(range(10))
    assert max(len(call) for call in calls) == 4 and len(calls) < 10


def test_a_lone_item_waits_at_most_max_wait():
    async def main():
        batcher = MicroBatcher(lambda items: items, max_batch_size=64, max_wait_ms=30)
        batcher.start()
        started = time.perf_counter()
        await batcher.submit("only")
        elapsed = time.perf_counter() - started
        await batcher.stop()
        return elapsed

    assert 0.025 < run(main()) < 1.0


def test_scorer_runs_off_the_event_loop_thread():
    threads = []

    def score(items):
        threads.append(threading.current_thread().name)
        return items

    async def main():
        batcher = MicroBatcher(score)
        batcher.start()
        await batcher.submit(1)
        await batcher.stop()

    run(main())
    assert threads == [threads[0]] and threads[0].startswith("dualsight-model")


def test_a_failed_batch_reaches_its_callers_and_the_next_batch_runs():
    def score(items):
        if "bad" in items:
            raise RuntimeError("model exploded")
        return items

    async def main():
        batcher = MicroBatcher(score, max_batch_size=8, max_wait_ms=5)
        batcher.start()
        failed = await asyncio.gather(batcher.submit("bad"), batcher.submit("ok"), return_exceptions=True)
        later = await batcher.submit("fine")
        await batcher.stop()
        return failed, later

    failed, later = run(main())
    assert all(isinstance(answer, RuntimeError) for answer in failed) and later == "fine"


def test_submit_before_start_and_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="at least 1"):
        MicroBatcher(lambda items: items, max_batch_size=0)
    with pytest.raises(RuntimeError, match="start"):
        run(MicroBatcher(lambda items: items).submit(1))
