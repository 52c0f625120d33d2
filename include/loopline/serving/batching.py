"""Natural batching: requests that arrive while the model is busy are scored together, nobody waits for a batch.

A request finds the scorer idle and is scored at once, alone; requests that arrive while a call
is running queue up and go, merged, into the next call, as soon as the running one returns.
Under light load nothing is ever held back; under heavy load calls grow to ``max_items`` rows
and pay the per-call cost (features, the prediction log, the answer) once for many requests.

Why not BentoML's adaptive batching (``@bentoml.api(batchable=True)``): its dispatcher holds a
request back for the *average wait of the last 50 calls*, and that average is made of its own
waits. After a burst of concurrent traffic it keeps holding single callers back for as long as
the burst's waits dominate the average: measured here, one connection sending batches of 50 after
a 64-connection phase got 0.3x a bare endpoint's throughput, each request held about 100 ms
while its scoring took 30. This batcher has no timer and no estimate to go stale.

Up to ``max_calls`` calls run at once, each on its own worker thread (LightGBM releases the GIL,
so one call's booster work runs beside another's Python work). ``in_flight`` tells the call how
many run, so it can give its booster all the cores when it runs alone and one when it does not.

A request that has waited longer than ``max_wait_seconds`` when its turn comes is refused with
``Overloaded`` (the service answers 503) instead of being scored for a client that gave up.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from loopline.core.errors import LooplineError

T = TypeVar("T")
R = TypeVar("R")


class Overloaded(LooplineError, RuntimeError):
    """The request waited longer than the traffic timeout before its turn (the service answers 503)."""


@dataclass
class _Job(Generic[T, R]):
    items: Sequence[T]
    future: asyncio.Future[list[R]]
    queued_at: float = field(default_factory=time.monotonic)


class NaturalBatcher(Generic[T, R]):
    """``await batcher.submit(items)``: ``call(merged items)`` on a worker thread, the caller's share back.

    ``call`` takes a list of items and returns one result per item, in order. If it raises, every
    request of that call gets the exception. Use from one event loop (BentoML's worker has one).
    """

    def __init__(
        self,
        call: Callable[[list[T]], Sequence[R]],
        max_items: int,
        max_wait_seconds: float,
        max_calls: int = 1,
    ) -> None:
        self._call = call
        self.max_items = max_items
        self.max_wait_seconds = max_wait_seconds
        self.max_calls = max_calls
        self._queue: deque[_Job[T, R]] = deque()
        self._drainers: set[asyncio.Task] = set()
        self._threads = ThreadPoolExecutor(max_workers=max_calls, thread_name_prefix="loopline-score")
        self.in_flight = 0  # calls running now (read by the call itself, on its thread)
        self.calls = 0  # calls made, and the largest one: for tests and curious operators
        self.largest_call = 0

    async def submit(self, items: Sequence[T]) -> list[R]:
        loop = asyncio.get_running_loop()
        job: _Job[T, R] = _Job(items, loop.create_future())
        self._queue.append(job)
        if len(self._drainers) < self.max_calls:  # a free slot: this request goes now
            drainer = loop.create_task(self._drain())
            self._drainers.add(drainer)
            drainer.add_done_callback(self._drainers.discard)
        return await job.future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            jobs = self._take()
            if not jobs:
                continue
            merged = [item for job in jobs for item in job.items]
            self.calls += 1
            self.largest_call = max(self.largest_call, len(merged))
            self.in_flight += 1
            try:
                results = await loop.run_in_executor(self._threads, self._call, merged)
            except Exception as err:  # every request of the call learns why
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(err)
                continue
            finally:
                self.in_flight -= 1
            if len(results) != len(merged):
                error = RuntimeError(f"scoring returned {len(results)} results for {len(merged)} items")
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            start = 0
            for job in jobs:
                end = start + len(job.items)
                if not job.future.done():  # a client that went away cancelled its future
                    job.future.set_result(list(results[start:end]))
                start = end

    def _take(self) -> list[_Job[T, R]]:
        """The queued requests for the next call: oldest first, up to ``max_items`` (one request at least)."""
        now = time.monotonic()
        jobs: list[_Job[T, R]] = []
        size = 0
        while self._queue:
            job = self._queue[0]
            if job.future.done():
                self._queue.popleft()
                continue
            waited = now - job.queued_at
            if waited > self.max_wait_seconds:
                self._queue.popleft()
                job.future.set_exception(
                    Overloaded(f"waited {waited:.1f} s for the model (limit {self.max_wait_seconds:g} s)")
                )
                continue
            if jobs and size + len(job.items) > self.max_items:
                break
            jobs.append(self._queue.popleft())
            size += len(job.items)
        return jobs

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

    def __repr__(self) -> str:
        return f"NaturalBatcher(max_items={self.max_items}, calls={self.calls}, queued={len(self._queue)})"
