"""Dynamic batching for one model: a queue, a loop that forms batches, and futures fanned back out.

Policy: when the model is idle a request runs at once (no batching tax on a lone request). While
a batch runs, arriving requests queue; when it finishes they are taken together, up to
`max_batch_size` records. If that batch is not full, the loop waits for more only while they keep
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


class AdaptiveBatcher(Generic[In, Out]):
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
        self._queue: deque[_Item[In, Out]] = deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"infer-{name}")
        self._slots = asyncio.Semaphore(workers)
        self._running = 0
        self._last_batch_end = 0.0
        self._last_arrival = 0.0
        self._gap = max_delay  # moving average of the time between arrivals
        self.inline_below = inline_below
        self._run_time = inline_below  # moving average of a batch's run time; starts on the executor
        self._in_flight: set[asyncio.Task[None]] = set()
        self._closed = False
        self._loop_task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{name}")

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
        future: asyncio.Future[list[Out]] = asyncio.get_running_loop().create_future()
        item = _Item(records, future)
        if self._last_arrival:
            self._gap += _GAP_SMOOTHING * (min(item.enqueued_at - self._last_arrival, self.max_delay) - self._gap)
        self._last_arrival = item.enqueued_at
        self._queue.append(item)
        self._wakeup.set()
        return future

    def _take(self, batch: list[_Item[In, Out]], count: int) -> int:
        while self._queue and count + len(self._queue[0].records) <= self.max_batch_size:
            item = self._queue.popleft()
            if not item.future.cancelled():
                batch.append(item)
                count += len(item.records)
        return count

    async def _loop(self) -> None:
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._slots.acquire()
            batch: list[_Item[In, Out]] = []
            count = self._take(batch, 0)
            # Requests that queued behind a running batch mean load: wait a little to fill up.
            under_load = (bool(batch) and batch[0].enqueued_at < self._last_batch_end) or self._running > 0
            if batch and under_load and count < self.max_batch_size and self.max_delay > 0:
                deadline = batch[0].enqueued_at + self.max_delay
                # A queued request that did not fit ends the wait: the batch cannot grow past it.
                while (
                    not self._queue
                    and count < self.max_batch_size
                    and (remaining := deadline - time.perf_counter()) > 0
                ):
                    self._wakeup.clear()
                    try:
                        async with asyncio.timeout(min(remaining, 2 * self._gap)):
                            await self._wakeup.wait()
                    except TimeoutError:
                        break
                    count = self._take(batch, count)
            if not batch:
                self._slots.release()
                continue
            self._running += 1
            task = asyncio.get_running_loop().create_task(self._execute(batch, count))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _execute(self, batch: list[_Item[In, Out]], count: int) -> None:
        started = time.perf_counter()
        records: list[In] = []
        if self._merge is not None:
            records = self._merge([item.records for item in batch])
        else:
            for item in batch:
                records.extend(item.records)
        try:
            if self._run_time < self.inline_below:
                results = self._timed_run(records)
            else:
                results = await asyncio.get_running_loop().run_in_executor(self._executor, self._timed_run, records)
            if len(results) != count:
                raise RuntimeError(f"the model returned {len(results)} results for {count} records")
        except Exception as exc:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
        else:
            at = 0
            for item in batch:
                n = len(item.records)
                if not item.future.done():
                    item.future.set_result(results[at : at + n])
                at += n
        finally:
            self._running -= 1
            self._last_batch_end = time.perf_counter()
            self._slots.release()
            if self._observe is not None:
                self._observe(count, [started - item.enqueued_at for item in batch])

    def _timed_run(self, records: list[In]) -> list[Out]:
        started = time.perf_counter()
        try:
            return self._run(records)
        finally:
            self._run_time += _RUN_SMOOTHING * (time.perf_counter() - started - self._run_time)

    async def close(self) -> None:
        """Finishes everything queued and in flight, then stops."""
        self._closed = True
        self._wakeup.set()
        await self._loop_task
        if self._in_flight:
            await asyncio.gather(*self._in_flight)
        self._executor.shutdown(wait=True)
