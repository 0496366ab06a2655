"""The batcher's machinery, pinned with toy models (no ONNX needed here)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from sagegate.server.batching import AdaptiveBatcher


class SumModel:
    """Doubles each record and remembers the batches it saw."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, records: list[int]) -> list[int]:
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            self.batches.append(list(records))
        return [2 * r for r in records]


class ErrorModel:
    def __call__(self, records: list[int]) -> list[int]:
        raise ValueError("boom")


class ShortModel:
    def __call__(self, records: list[int]) -> list[int]:
        return records[:-1]


async def test_lone_request_runs_at_once_without_waiting_for_max_delay() -> None:
    model = SumModel()
    batcher = AdaptiveBatcher(model, max_batch_size=8, max_delay=5.0)
    started = time.perf_counter()
    assert await batcher.submit([1, 2, 3]) == [2, 4, 6]
    # max_delay is 5 s: finishing far sooner proves the idle path does not wait for more records.
    assert time.perf_counter() - started < 2.5
    await batcher.close()


async def test_requests_arriving_during_a_batch_are_taken_together_in_order() -> None:
    model = SumModel(delay=0.2)
    observed: list[tuple[int, int]] = []
    batcher = AdaptiveBatcher(
        model, max_batch_size=32, max_delay=0.05, observe=lambda size, waits: observed.append((size, len(waits)))
    )
    first = asyncio.create_task(batcher.submit([0]))
    await asyncio.sleep(0.05)  # the first batch is now running
    rest = [asyncio.create_task(batcher.submit([i, 100 + i])) for i in range(1, 11)]
    assert await first == [0]
    results = await asyncio.gather(*rest)
    assert results == [[2 * i, 200 + 2 * i] for i in range(1, 11)]
    assert model.batches[0] == [0]
    assert model.batches[1] == [r for i in range(1, 11) for r in (i, 100 + i)]
    assert observed == [(1, 1), (20, 10)]
    await batcher.close()


async def test_a_batch_does_not_wait_for_more_when_the_next_request_cannot_join_it() -> None:
    """Under load a batch short of max_batch_size waits for more records, but not when the queued
    request would not fit: 100-record requests with max_batch_size 128 each waited out the delay."""
    model = SumModel(delay=0.2)
    batcher = AdaptiveBatcher(model, max_batch_size=4, max_delay=5.0)
    first = asyncio.create_task(batcher.submit([0]))
    await asyncio.sleep(0.05)  # the first batch is now running: A and B queue behind it
    started = time.perf_counter()
    a = asyncio.create_task(batcher.submit([1, 2, 3]))
    b = asyncio.create_task(batcher.submit([4, 5, 6]))
    assert await a == [2, 4, 6]
    # max_delay is 5 s: A is answered after the first batch and its own (0.4 s), not after a wait
    # for records that could not have joined it (B's 3 do not fit beside A's 3).
    assert time.perf_counter() - started < 2.5
    assert await first == [0] and await b == [8, 10, 12]
    assert model.batches == [[0], [1, 2, 3], [4, 5, 6]]
    await batcher.close()


async def test_batches_never_exceed_max_batch_size_and_big_requests_are_split_in_order() -> None:
    model = SumModel(delay=0.01)
    batcher = AdaptiveBatcher(model, max_batch_size=4, max_delay=0.01)
    records = list(range(23))
    small = [asyncio.create_task(batcher.submit([1000 + i])) for i in range(9)]
    assert await batcher.submit(records) == [2 * r for r in records]
    assert [r for task in small for r in await task] == [2000 + 2 * i for i in range(9)]
    assert max(len(b) for b in model.batches) <= 4
    assert sorted(r for b in model.batches for r in b) == sorted(records + [1000 + i for i in range(9)])
    await batcher.close()


async def test_a_failing_model_fails_every_request_of_its_batch_and_the_batcher_goes_on() -> None:
    batcher = AdaptiveBatcher(ErrorModel(), max_batch_size=4, max_delay=0.01)
    outcomes = await asyncio.gather(*(batcher.submit([i]) for i in range(6)), return_exceptions=True)
    assert all(isinstance(o, ValueError) and str(o) == "boom" for o in outcomes)
    with pytest.raises(ValueError, match="boom"):
        await batcher.submit([1])
    await batcher.close()


async def test_a_model_returning_the_wrong_count_is_an_error_not_a_hang() -> None:
    batcher = AdaptiveBatcher(ShortModel(), max_batch_size=4, max_delay=0.01)
    with pytest.raises(RuntimeError, match="returned 2 results for 3 records"):
        await asyncio.wait_for(batcher.submit([1, 2, 3]), 5)
    await batcher.close()


async def test_close_finishes_queued_and_running_work() -> None:
    model = SumModel(delay=0.05)
    batcher = AdaptiveBatcher(model, max_batch_size=2, max_delay=0.0)
    tasks = [asyncio.create_task(batcher.submit([i])) for i in range(6)]
    await asyncio.sleep(0.01)
    await batcher.close()
    assert [await t for t in tasks] == [[2 * i] for i in range(6)]
    with pytest.raises(RuntimeError, match="closed"):
        await batcher.submit([1])


async def test_several_workers_run_batches_concurrently() -> None:
    model = SumModel(delay=0.3)
    batcher = AdaptiveBatcher(model, max_batch_size=1, max_delay=0.0, workers=4)
    started = time.perf_counter()
    assert await asyncio.gather(*(batcher.submit([i]) for i in range(4))) == [[0], [2], [4], [6]]
    # Four 0.3 s batches on four workers overlap; one after another they would take 1.2 s.
    assert time.perf_counter() - started < 0.9
    await batcher.close()


class BlockModel:
    """Doubles a block of records (a numpy array), remembering the blocks it ran."""

    def __init__(self, delay: float = 0.0) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self.delay = delay

    def __call__(self, block: object) -> object:
        import numpy as np

        assert isinstance(block, np.ndarray)
        if self.delay:
            time.sleep(self.delay)
        self.shapes.append(block.shape)
        return block * 2


async def test_blocks_are_merged_into_one_array_and_answered_as_arrays() -> None:
    import numpy as np

    model = BlockModel(delay=0.1)
    batcher = AdaptiveBatcher(model, max_batch_size=8, max_delay=0.05, merge=np.concatenate)  # type: ignore[arg-type]
    first = asyncio.create_task(batcher.submit(np.zeros((2, 3))))  # type: ignore[arg-type]
    await asyncio.sleep(0.03)
    blocks = [np.full((2, 3), i) for i in range(1, 4)]
    rest = [asyncio.create_task(batcher.submit(b)) for b in blocks]  # type: ignore[arg-type]
    await first
    for block, answer in zip(blocks, await asyncio.gather(*rest), strict=True):
        assert isinstance(answer, np.ndarray)
        np.testing.assert_array_equal(answer, block * 2)
    assert model.shapes == [(2, 3), (6, 3)]  # the three blocks that queued ran as one
    big = np.arange(40.0).reshape(20, 2)  # over max_batch_size: split, then merged back in order
    answer = await batcher.submit(big)  # type: ignore[arg-type]
    assert isinstance(answer, np.ndarray)
    np.testing.assert_array_equal(answer, big * 2)
    await batcher.close()


async def test_blocks_that_cannot_be_merged_fail_their_requests_instead_of_hanging() -> None:
    """Two blocks of different widths queued together: the merge raises, and both requests get the
    error (the merge ran outside the batch's error handling, and its requests waited forever)."""
    import numpy as np

    model = BlockModel(delay=0.1)
    batcher = AdaptiveBatcher(model, max_batch_size=8, max_delay=0.05, merge=np.concatenate)  # type: ignore[arg-type]
    first = asyncio.create_task(batcher.submit(np.zeros((1, 3))))  # type: ignore[arg-type]
    await asyncio.sleep(0.03)  # running: the next two queue and are merged into one batch
    wide, narrow = batcher.submit(np.zeros((1, 3))), batcher.submit(np.zeros((1, 2)))  # type: ignore[arg-type]
    outcomes = await asyncio.wait_for(asyncio.gather(wide, narrow, return_exceptions=True), 5)
    assert all(isinstance(o, ValueError) for o in outcomes), outcomes
    await first
    await batcher.close()
