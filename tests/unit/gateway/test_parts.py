"""The gateway's parts on their own: catalog TTL, Firehose batching, EMF output, Redis time budgets."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from botocore.session import get_session
from botocore.stub import Stubber

from sagegate.gateway.cache import PredictionCache
from sagegate.gateway.catalog import CachedCatalog, InMemoryCatalog
from sagegate.gateway.metrics import GatewayMetrics
from sagegate.gateway.online_features import OnlineFeatureStore
from sagegate.gateway.prediction_log import FirehoseLog, firehose_record
from sagegate.gateway.redis_support import Breaker, cache_store, redis_client
from sagegate.routing import Route
from tests.unit.gateway.conftest import manifest


def test_the_catalog_cache_asks_the_source_once_per_ttl() -> None:
    now = [0.0]
    source = InMemoryCatalog([manifest("1")])
    cached = CachedCatalog(source, ttl=30, clock=lambda: now[0])
    assert cached.route("fraud") is None
    source.add(
        Route.model_validate(
            {"model": "fraud", "endpoint": "e", "variants": [{"name": "v1", "model_version": "1", "weight": 1}]}
        )
    )
    assert cached.route("fraud") is None  # a cached miss
    now[0] = 31.0
    route = cached.route("fraud")
    assert route is not None and route.endpoint == "e"
    assert cached.manifest("fraud", "1") is not None and cached.versions("fraud") == ["1"]


def test_firehose_log_batches_within_the_limits_and_retries_failures_once() -> None:
    client = get_session().create_client("firehose", region_name="eu-west-1")
    log = FirehoseLog(client, "predictions")
    for i in range(501):
        log.record({"prediction_id": str(i)})
    with Stubber(client) as stub:
        stub.add_response(
            "put_record_batch",
            {
                "FailedPutCount": 1,
                "RequestResponses": [
                    {"RecordId": str(i)}
                    if i != 7
                    else {"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "busy"}
                    for i in range(500)
                ],
            },
        )
        stub.add_response(
            "put_record_batch",
            {"FailedPutCount": 0, "RequestResponses": [{"RecordId": "retry"}]},
            {"DeliveryStreamName": "predictions", "Records": [{"Data": b'{"prediction_id":"7"}\n'}]},
        )
        stub.add_response(
            "put_record_batch",
            {"FailedPutCount": 0, "RequestResponses": [{"RecordId": "last"}]},
            {"DeliveryStreamName": "predictions", "Records": [{"Data": b'{"prediction_id":"500"}\n'}]},
        )
        log.flush()
        stub.assert_no_pending_responses()
    log.flush()  # nothing left: no call


def test_firehose_log_sends_the_firehose_record_of_each_line() -> None:
    client = get_session().create_client("firehose", region_name="eu-west-1")
    log = FirehoseLog(client, "predictions")
    entry = {"prediction_id": "a", "features": {"amount": 12.5, "channel": None}, "score": 0.5}
    log.record(entry)
    with Stubber(client) as stub:
        stub.add_response(
            "put_record_batch",
            {"FailedPutCount": 0, "RequestResponses": [{"RecordId": "1"}]},
            {"DeliveryStreamName": "predictions", "Records": [{"Data": firehose_record(entry)}]},
        )
        log.flush()
        stub.assert_no_pending_responses()
    assert firehose_record(entry) == b'{"prediction_id":"a","features":{"amount":"12.5","channel":null},"score":0.5}\n'


def test_metrics_flush_one_emf_document_per_model_and_variant(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = GatewayMetrics(emit=True)
    metrics.add("fraud", "v1", "latency_ms", 1.5)
    metrics.add("fraud", "v1", "latency_ms", 2.5)
    metrics.add("fraud", "v2", "degraded")
    metrics.flush()
    documents = [orjson.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    by_variant = {d["variant"]: d for d in documents}
    assert by_variant["v1"]["latency_ms"] == [1.5, 2.5] and by_variant["v2"]["degraded"] in (1.0, [1.0])
    definition = by_variant["v1"]["_aws"]["CloudWatchMetrics"][0]
    assert definition["Namespace"] == "sagegate" and ["model", "variant", "service"] in [
        sorted(d, key=["model", "variant", "service"].index) for d in definition["Dimensions"]
    ]
    assert metrics.total("latency_ms", model="fraud") == 4.0


def test_a_hanging_redis_costs_the_budget_three_times_then_is_skipped(silent_port: int) -> None:
    async def scenario() -> None:
        client = redis_client(f"redis://127.0.0.1:{silent_port}/0", budget_ms=50)
        asked: list[str] = []
        real_hgetall = client.hgetall

        async def counted(name: str) -> Any:
            asked.append(name)
            return await real_hgetall(name)

        client.hgetall = counted
        breaker = Breaker(threshold=3)
        store = OnlineFeatureStore(client, breaker)
        for _ in range(3):
            started = time.perf_counter()
            lookup = await store.fetch("user_id", "u1", {"amount"})
            assert lookup.available is False and lookup.values == {}
            assert time.perf_counter() - started < 5  # bounded by the budget, not by a default socket timeout
            assert breaker.open is (_ == 2)  # a slow answer or two is not an outage; three in a row are
        again = await store.fetch("user_id", "u1", {"amount"})
        assert again.available is False and len(asked) == 3  # skipped, not asked

        cache = PredictionCache(cache_store(redis_client(f"redis://127.0.0.1:{silent_port}/0", budget_ms=50)))
        calls: list[int] = []

        async def compute() -> dict[str, Any]:
            calls.append(1)
            return {"prediction": 0.5}

        outcome = await cache.get_or_compute("k", 60, compute)
        assert (outcome.value, outcome.hit, calls) == ({"prediction": 0.5}, False, [1])
        assert cache.unavailable >= 1

    asyncio.run(scenario())


def test_the_in_process_store_serves_the_cache_and_features_like_redis() -> None:
    async def scenario() -> None:
        client = redis_client("memory://", budget_ms=20)
        assert client is redis_client("memory://", budget_ms=20)  # one store per process
        cache = PredictionCache(cache_store(client), wait=2.0, clock=time.time)
        calls: list[int] = []
        gate = asyncio.Event()

        async def compute() -> dict[str, Any]:
            calls.append(1)
            await asyncio.wait_for(gate.wait(), 1)
            return {"prediction": 0.25}

        waiting = [asyncio.create_task(cache.get_or_compute("k-mem", 1, compute)) for _ in range(8)]
        await asyncio.sleep(0.2)
        gate.set()
        results = await asyncio.gather(*waiting)
        assert len(calls) == 1 and sum(r.hit for r in results) == 7  # single-flight
        await asyncio.sleep(1.1)
        stale = await cache.read("k-mem")
        assert stale is not None and not stale.fresh  # past its TTL, kept for degraded answers
        store = OnlineFeatureStore(client)
        await store.put("user_id", "u9", {"amount": 12.5, "channel": "web"})
        assert (await store.fetch("user_id", "u9", {"amount"})).values == {"amount": 12.5}

    asyncio.run(scenario())
