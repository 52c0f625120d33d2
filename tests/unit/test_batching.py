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


def behind_a_running_call(batcher, scorer, first, queued, hold=0.01, meanwhile=None):
    """``first`` starts a call that blocks; ``queued`` requests arrive behind it; ``hold`` s later it returns.

    ``meanwhile(futures)`` runs on the queued requests' futures before the release. Returns the first
    request's answer and each queued request's outcome (answer or exception), in order.
    """

    async def run():
        running = asyncio.ensure_future(batcher.submit(first))
        await _when_running(scorer)
        futures = [asyncio.ensure_future(batcher.submit(items)) for items in queued]
        await asyncio.sleep(hold)
        if meanwhile is not None:
            meanwhile(futures)
        scorer.release.set()
        return await running, await asyncio.gather(*futures, return_exceptions=True)

    return asyncio.run(run())


def test_requests_that_queue_behind_a_running_call_share_the_next_call_and_get_their_own_answers():
    scorer = Scorer()
    batcher = NaturalBatcher(scorer, max_items=100, max_wait_seconds=10)
    first, queued = behind_a_running_call(batcher, scorer, [1], [[10 * k, 10 * k + 1] for k in range(1, 4)])
    assert first == [2]
    assert queued == [[20, 22], [40, 42], [60, 62]]
    assert scorer.calls == [[1], [10, 11, 20, 21, 30, 31]], "the three queued requests went in one call"


def test_a_call_takes_at_most_max_items_but_never_splits_a_request():
    scorer = Scorer()
    batcher = NaturalBatcher(scorer, max_items=4, max_wait_seconds=10)
    _, queued = behind_a_running_call(batcher, scorer, [0], [[1, 2, 3], [4, 5], [6], [7, 8, 9, 10, 11]])
    assert queued[-1] == [14, 16, 18, 20, 22]
    assert scorer.calls == [[0], [1, 2, 3], [4, 5, 6], [7, 8, 9, 10, 11]], "an oversized request goes alone"


def test_a_failing_call_fails_its_requests_only_and_the_batcher_keeps_serving():
    scorer = Scorer(fail_on=13)
    batcher = NaturalBatcher(scorer, max_items=100, max_wait_seconds=10)
    first, (bad, merged_with_bad) = behind_a_running_call(batcher, scorer, [1], [[13], [2]])
    assert first == [2] and asyncio.run(batcher.submit([5])) == [10]
    assert isinstance(bad, ValueError) and isinstance(merged_with_bad, ValueError)


def test_a_request_that_waited_past_the_traffic_timeout_is_refused_not_scored():
    scorer = Scorer()
    batcher = NaturalBatcher(scorer, max_items=100, max_wait_seconds=0.05)
    # The running call holds the model longer than the late request may wait.
    first, (late,) = behind_a_running_call(batcher, scorer, [1], [[2]], hold=0.2)
    assert first == [2]
    with pytest.raises(Overloaded, match="limit 0.05 s"):
        raise late
    assert scorer.calls == [[1]]


def test_a_request_whose_client_went_away_is_not_scored():
    scorer = Scorer()
    batcher = NaturalBatcher(scorer, max_items=100, max_wait_seconds=10)
    first, (gone, kept) = behind_a_running_call(batcher, scorer, [1], [[2], [3]], meanwhile=lambda f: f[0].cancel())
    assert first == [2] and kept == [6] and isinstance(gone, asyncio.CancelledError)
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
