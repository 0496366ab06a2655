"""Dynamic batching seen from outside: the batch-size metric, answer order, no tax on a lone request."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pytest

from sagegate.local.data import Transactions
from sagegate.packaging import BuiltPackage
from tests.integration.conftest import StartServer
from tests.integration.helpers import expected_positive, metric

pytestmark = pytest.mark.integration


def test_concurrent_requests_share_batches_and_get_their_own_answers(
    start_server: StartServer, fraud_xgboost: BuiltPackage, transactions: Transactions, client: httpx.Client
) -> None:
    server = start_server(fraud_xgboost, args=("--max-batch-size", "32", "--max-delay-ms", "10"))
    records = transactions.records[:256]
    expected = expected_positive(fraud_xgboost, records)

    async def fire() -> list[float]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(timeout=60, limits=limits) as session:

            async def one(record: dict) -> float:  # type: ignore[type-arg]
                answer = await session.post(f"{server.url}/invocations", json={"features": record})
                answer.raise_for_status()
                return float(answer.json()["predictions"][0]["prediction"])

            return await asyncio.gather(*(one(r) for r in records))

    got = asyncio.run(fire())
    np.testing.assert_allclose(got, expected, atol=1e-6)  # each request got its own record's answer

    batches = metric(client, server.url, "sagegate_batch_size_count", model="fraud-xgboost")
    batched = metric(client, server.url, "sagegate_batch_size_sum", model="fraud-xgboost")
    singles = metric(client, server.url, "sagegate_batch_size_bucket", model="fraud-xgboost", le="1.0")
    assert batched == 256
    assert batches < 256  # some requests really were predicted together
    assert singles < batches  # ...and not just one lucky pair
    assert metric(client, server.url, "sagegate_queue_wait_seconds_count", model="fraud-xgboost") == 256


def test_a_big_request_is_split_into_batches_and_reassembled(
    start_server: StartServer, fraud_logreg: BuiltPackage, transactions: Transactions, client: httpx.Client
) -> None:
    server = start_server(fraud_logreg, args=("--max-batch-size", "16"))
    records = transactions.records[:100]
    answer = client.post(f"{server.url}/invocations", json={"instances": records}).json()["predictions"]
    np.testing.assert_allclose([p["prediction"] for p in answer], expected_positive(fraud_logreg, records), atol=1e-6)
    assert metric(client, server.url, "sagegate_batch_size_count", model="fraud-logreg") == 7  # 6 x 16 + 4
    assert metric(client, server.url, "sagegate_records_total", model="fraud-logreg") == 100


def test_a_lone_request_is_not_held_for_max_delay(
    start_server: StartServer, fraud_logreg: BuiltPackage, transactions: Transactions, client: httpx.Client
) -> None:
    server = start_server(fraud_logreg, args=("--max-delay-ms", "3000"))
    for record in transactions.records[:5]:
        started = time.perf_counter()
        assert client.post(f"{server.url}/invocations", json={"features": record}).status_code == 200
        # Waiting for company would take 3 s; an idle model answers at once.
        assert time.perf_counter() - started < 1.5
    assert metric(client, server.url, "sagegate_batch_size_count", model="fraud-logreg") == 5
