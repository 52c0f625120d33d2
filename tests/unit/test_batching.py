"""NaturalBatcher: nobody waits for a batch; requests that queue behind a running call go together into the next."""

from __future__ import annotations

import asyncio
import threading

import pytest

from loopline.serving.batching import NaturalBatcher, Overloaded


class Scorer:
    """Doubles each item; the first call blocks until released, so requests can queue behind it."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls: list[list[int]] = []
        self.release = threading.Event()
        self.started = threading.Event()
        self.fail_on = fail_on

    def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(list(items))
        self.started.set()
        if len(self.calls) == 1:
            self.release.wait(10)
        if self.fail_on in items:
            raise ValueError(f"cannot score {self.fail_on}")
        return [2 * i for i in items]


async def _when_running(scorer: Scorer) -> None:
    while not scorer.started.is_set():
        await asyncio.sleep(0.001)


def test_a_lone_request_is_scored_at_once_and_alone():
    scorer = Scorer()
    scorer.release.set()
    batcher = NaturalBatcher(scorer, max_items=100, max_wait_seconds=10)
    assert asyncio.run(batcher.submit([1, 2, 3])) == [2, 4, 6]
    assert scorer.calls == [[1, 2, 3]]


def test_requests_that_queue_behind_a_running_call_share_the_next_call_and_get_their_own_answers():
    scorer = Scorer()
    batcher = NaturalBatcher(scorer, max_items=100, max_wait_seconds=10)

    async def run():
        first = asyncio.ensure_future(batcher.submit([1]))
        await _when_running(scorer)
        queued = [asyncio.ensure_future(batcher.submit([10 * k, 10 * k + 1])) for k in range(1, 4)]
        await asyncio.sleep(0.01)
        scorer.release.set()
        return await first, await asyncio.gather(*queued)

    first, queued = asyncio.run(run())
    assert first == [2]
    assert queued == [[20, 22], [40, 42], [60, 62]]
    assert scorer.calls == [[1], [10, 11, 20, 21, 30, 31]], "the three queued requests went in one call"


def test_a_call_takes_at_most_max_items_but_never_splits_a_request():
    scorer = Scorer()
    batcher = NaturalBatcher(scorer, max_items=4, max_wait_seconds=10)

    async def run():
        first = asyncio.ensure_future(batcher.submit([0]))
        await _when_running(scorer)
        queued = [asyncio.ensure_future(batcher.submit(items)) for items in ([1, 2, 3], [4, 5], [6], [7, 8, 9, 10, 11])]
        await asyncio.sleep(0.01)
        scorer.release.set()
        return await asyncio.gather(first, *queued)

    results = asyncio.run(run())
    assert results[-1] == [14, 16, 18, 20, 22]
    assert scorer.calls == [[0], [1, 2, 3], [4, 5, 6], [7, 8, 9, 10, 11]], "an oversized request goes alone"


def test_a_failing_call_fails_its_requests_only_and_the_batcher_keeps_serving():
    scorer = Scorer(fail_on=13)
    batcher = NaturalBatcher(scorer, max_items=100, max_wait_seconds=10)

    async def run():
        first = asyncio.ensure_future(batcher.submit([1]))
        await _when_running(scorer)
        doomed = [asyncio.ensure_future(batcher.submit([13])), asyncio.ensure_future(batcher.submit([2]))]
        await asyncio.sleep(0.01)
        scorer.release.set()
        outcomes = await asyncio.gather(first, *doomed, return_exceptions=True)
        return outcomes, await batcher.submit([5])

    (first, bad, merged_with_bad), later = asyncio.run(run())
    assert first == [2] and later == [10]
    assert isinstance(bad, ValueError) and isinstance(merged_with_bad, ValueError)


def test_a_request_that_waited_past_the_traffic_timeout_is_refused_not_scored():
    scorer = Scorer()
    batcher = NaturalBatcher(scorer, max_items=100, max_wait_seconds=0.05)

    async def run():
        first = asyncio.ensure_future(batcher.submit([1]))
        await _when_running(scorer)
        late = asyncio.ensure_future(batcher.submit([2]))
        await asyncio.sleep(0.2)  # the running call holds the model longer than the late request may wait
        scorer.release.set()
        return await first, late

    first, late = asyncio.run(run())
    assert first == [2]
    with pytest.raises(Overloaded, match="limit 0.05 s"):
        late.result()
    assert scorer.calls == [[1]]


def test_a_request_whose_client_went_away_is_not_scored():
    scorer = Scorer()
    batcher = NaturalBatcher(scorer, max_items=100, max_wait_seconds=10)

    async def run():
        first = asyncio.ensure_future(batcher.submit([1]))
        await _when_running(scorer)
        gone = asyncio.ensure_future(batcher.submit([2]))
        kept = asyncio.ensure_future(batcher.submit([3]))
        await asyncio.sleep(0.01)
        gone.cancel()
        scorer.release.set()
        return await first, await kept

    assert asyncio.run(run()) == ([2], [6])
    assert scorer.calls == [[1], [3]]


def test_with_free_call_slots_a_request_does_not_wait_for_a_running_call_and_calls_know_they_are_not_alone():
    release, seen = threading.Event(), []
    batcher: NaturalBatcher[int, int]

    def call(items: list[int]) -> list[int]:
        seen.append((list(items), batcher.in_flight))
        if items == [1]:
            release.wait(10)  # the first call holds its slot
        return items

    batcher = NaturalBatcher(call, max_items=100, max_wait_seconds=10, max_calls=2)

    async def run():
        first = asyncio.ensure_future(batcher.submit([1]))
        while not seen:
            await asyncio.sleep(0.001)
        second = await asyncio.wait_for(batcher.submit([2]), 5)  # scored while the first still runs
        release.set()
        return await first, second

    assert asyncio.run(run()) == ([1], [2])
    assert seen == [([1], 1), ([2], 2)], "the second call ran beside the first, and knew it"
    assert batcher.in_flight == 0
