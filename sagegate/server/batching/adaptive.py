"""Dynamic batching for one model: a queue, batches formed on the event loop's callbacks, and
futures fanned back out.

Policy: when the model is idle a request runs at once (no batching tax on a lone request). While
a batch runs, arriving requests queue; when it finishes they are taken together, up to
`max_batch_size` records. If that batch is not full, it waits for more only while they keep
coming: each wait lasts about two recent inter-arrival gaps, and never past the moment the oldest
queued request has waited `max_delay` seconds. (Waiting out the full delay for records that are
not on their way only adds latency: 16 closed-loop clients never fill a batch of 32; nor does one
that is queued but would not fit: the wait ends when the next request cannot join.) A request
with more records than `max_batch_size` is split into chunks that are reassembled in order.

Batches run on a worker thread (ONNX Runtime releases the GIL), except when the model is so fast
that the thread hand-off would cost more than the model: while the moving average of a batch's
run time stays under `inline_below` seconds, batches run directly on the event loop.

What a request's records are is the caller's: rows in a list by default, or one block (a numpy
array of records) with `merge` concatenating blocks: the records of a batch, and the results of a
split request. Results are sliced back to their requests either way.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["AdaptiveBatcher", "BatchObserver"]

In = TypeVar("In")
Out = TypeVar("Out")

# Called once per batch with (batch size in records, queue waits of its requests in seconds).
BatchObserver = Callable[[int, list[float]], None]

_GAP_SMOOTHING = 0.1
_RUN_SMOOTHING = 0.2


@dataclass
class _Item(Generic[In, Out]):
    records: Sequence[In]
    future: asyncio.Future[list[Out]]
    enqueued_at: float = field(default_factory=time.perf_counter)


@dataclass
class _Forming(Generic[In, Out]):
    """A batch short of max_batch_size that waits for more records until its timer fires."""

    batch: list[_Item[In, Out]]
    count: int
    deadline: float
    timer: asyncio.TimerHandle


class AdaptiveBatcher(Generic[In, Out]):
    """Runs on the event loop's callbacks, with no task of its own: a request's arrival schedules a
    dispatch for the end of the loop's current step (so every request that arrived in it can join),
    a batch waiting to fill up is a timer, and a batch run on a worker thread calls back when done."""

    def __init__(
        self,
        run: Callable[[list[In]], list[Out]],
        *,
        max_batch_size: int = 32,
        max_delay: float = 0.010,
        workers: int = 1,
        observe: BatchObserver | None = None,
        name: str = "model",
        inline_below: float = 0.0,
        merge: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        self._run = run
        self._merge = merge
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay
        self._observe = observe
        self._loop = asyncio.get_running_loop()
        self._queue: deque[_Item[In, Out]] = deque()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"infer-{name}")
        self._workers = workers
        self._running = 0
        self._last_batch_end = 0.0
        self._last_arrival = 0.0
        self._gap = max_delay  # moving average of the time between arrivals
        self.inline_below = inline_below
        self._run_time = inline_below  # moving average of a batch's run time; starts on the executor
        self._scheduled = False  # a dispatch is due at the end of the loop's step
        self._forming: _Forming[In, Out] | None = None  # a batch waiting for more records
        self._drained: asyncio.Future[None] | None = None
        self._closed = False

    async def submit(self, records: Sequence[In]) -> list[Out]:
        if self._closed:
            raise RuntimeError("the batcher is closed")
        if len(records) == 0:
            return records[:0] if self._merge is not None else []  # type: ignore[return-value]
        size = self.max_batch_size
        if len(records) <= size:
            return await self._enqueue(records)
        chunks = [self._enqueue(records[i : i + size]) for i in range(0, len(records), size)]
        if self._merge is not None:
            return self._merge(list(await asyncio.gather(*chunks)))  # type: ignore[no-any-return]
        results: list[Out] = []
        for part in await asyncio.gather(*chunks):
            results.extend(part)
        return results

    def _enqueue(self, records: Sequence[In]) -> asyncio.Future[list[Out]]:
        future: asyncio.Future[list[Out]] = self._loop.create_future()
        item = _Item(records, future)
        if self._last_arrival:
            self._gap += _GAP_SMOOTHING * (min(item.enqueued_at - self._last_arrival, self.max_delay) - self._gap)
        self._last_arrival = item.enqueued_at
        self._queue.append(item)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._dispatch)
        return future

    def _take(self, batch: list[_Item[In, Out]], count: int) -> int:
        while self._queue and count + len(self._queue[0].records) <= self.max_batch_size:
            item = self._queue.popleft()
            if not item.future.cancelled():
                batch.append(item)
                count += len(item.records)
        return count

    def _dispatch(self, waited: bool = False) -> None:
        """Forms and starts batches while a worker is free. `waited`: a forming batch's wait is over."""
        self._scheduled = False
        while self._running < self._workers:
            forming, self._forming = self._forming, None
            if forming is not None:
                forming.timer.cancel()
                batch, count = forming.batch, self._take(forming.batch, forming.count)
                deadline = forming.deadline
            else:
                batch = []
                count = self._take(batch, 0)
                if not batch:
                    if self._queue:
                        continue  # every request taken had gone (cancelled): the next ones
                    break
                # Requests that queued behind a running batch mean load: wait a little to fill up.
                under_load = batch[0].enqueued_at < self._last_batch_end or self._running > 0
                deadline = batch[0].enqueued_at + self.max_delay if under_load and self.max_delay > 0 else 0.0
            # A queued request that did not fit ends the wait: the batch cannot grow past it.
            if not (waited or self._closed or self._queue) and count < self.max_batch_size:
                remaining = deadline - time.perf_counter()
                if remaining > 0:
                    timer = self._loop.call_later(min(remaining, 2 * self._gap), self._dispatch, True)
                    self._forming = _Forming(batch, count, deadline, timer)
                    return
            waited = False
            if batch:
                self._start(batch, count)
        self._check_drained()

    def _start(self, batch: list[_Item[In, Out]], count: int) -> None:
        self._running += 1
        started = time.perf_counter()
        if self._run_time < self.inline_below:
            outcome: list[Out] | BaseException
            try:
                outcome = self._timed_run(self._records(batch))
            except Exception as exc:
                outcome = exc
            self._finish(batch, count, started, outcome)
            return
        try:
            running = self._loop.run_in_executor(self._executor, self._timed_run, self._records(batch))
        except Exception as exc:  # the records could not be merged
            self._finish(batch, count, started, exc)
            return

        def done(future: asyncio.Future[list[Out]]) -> None:
            self._finish(batch, count, started, future.exception() or future.result())
            self._dispatch()

        running.add_done_callback(done)

    def _records(self, batch: list[_Item[In, Out]]) -> list[In]:
        if self._merge is not None:
            return self._merge([item.records for item in batch])  # type: ignore[no-any-return]
        records: list[In] = []
        for item in batch:
            records.extend(item.records)
        return records

    def _finish(
        self, batch: list[_Item[In, Out]], count: int, started: float, outcome: list[Out] | BaseException
    ) -> None:
        """Answers the batch's requests with the model's results, or fails them with its error."""
        self._running -= 1
        self._last_batch_end = time.perf_counter()
        if not isinstance(outcome, BaseException) and len(outcome) != count:
            outcome = RuntimeError(f"the model returned {len(outcome)} results for {count} records")
        if isinstance(outcome, BaseException):
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(outcome)
        else:
            at = 0
            for item in batch:
                n = len(item.records)
                if not item.future.done():
                    item.future.set_result(outcome[at : at + n])
                at += n
        if self._observe is not None:
            self._observe(count, [started - item.enqueued_at for item in batch])

    def _check_drained(self) -> None:
        drained = self._drained
        if drained is not None and not drained.done() and not (self._queue or self._running or self._forming):
            drained.set_result(None)

    def _timed_run(self, records: list[In]) -> list[Out]:
        started = time.perf_counter()
        try:
            return self._run(records)
        finally:
            self._run_time += _RUN_SMOOTHING * (time.perf_counter() - started - self._run_time)

    async def close(self) -> None:
        """Finishes everything queued and in flight (a batch still filling up starts now), then stops."""
        self._closed = True
        self._drained = self._loop.create_future()
        self._dispatch(waited=True)
        await self._drained
        self._executor.shutdown(wait=True)
