"""Prometheus metrics of the inference server, served on GET /metrics.

With several worker processes (sagegate.server.workers), each writes its values to files in
PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode, set up by the parent) and /metrics
answers the sum over the workers, whichever of them is asked: counters and histograms add up, the
models loaded is the most any live worker has, the memory used is the sum of the copies.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "MULTIPROCESS_DIR", "ServerMetrics"]

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class ServerMetrics:
    def __init__(self, max_batch_size: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "sagegate_requests",
            "Requests answered, by model, route and HTTP status.",
            ["model", "route", "code"],
            registry=r,
        )
        self.errors = Counter(
            "sagegate_errors", "Failed requests, by model and kind of error.", ["model", "kind"], registry=r
        )
        self.records = Counter("sagegate_records", "Records predicted.", ["model"], registry=r)
        self.latency = Histogram(
            "sagegate_request_duration_seconds",
            "Request latency inside the server.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        size_buckets = sorted({float(min(2**i, max_batch_size)) for i in range(max_batch_size.bit_length() + 1)})
        self.batch_size = Histogram(
            "sagegate_batch_size", "Records per executed batch.", ["model"], buckets=size_buckets, registry=r
        )
        self.queue_wait = Histogram(
            "sagegate_queue_wait_seconds",
            "Time a request waited for its batch.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.models_loaded = Gauge("sagegate_models_loaded", "Models loaded.", registry=r, multiprocess_mode="livemax")
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._records: dict[str, Any] = {}
        self.memory_used = Gauge(
            "sagegate_model_memory_mb",
            "Memory budget used by loaded models (MB), every worker's copies together.",
            registry=r,
            multiprocess_mode="livesum",
        )

    def request_done(self, model: str, route: str, code: int, seconds: float) -> None:
        key = (model, route, code)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.requests.labels(model, route, str(code)), self.latency.labels(model))
        children[0].inc()
        children[1].observe(seconds)

    def records_done(self, model: str, count: int) -> None:
        child = self._records.get(model)
        if child is None:
            child = self._records[model] = self.records.labels(model)
        child.inc(count)

    def batch_observer(self, model: str):  # type: ignore[no-untyped-def]
        size = self.batch_size.labels(model)
        wait = self.queue_wait.labels(model)

        def observe(count: int, waits: list[float]) -> None:
            size.observe(count)
            for seconds in waits:
                wait.observe(seconds)

        return observe

    def render(self) -> bytes:
        if os.environ.get(MULTIPROCESS_DIR):
            from prometheus_client import multiprocess

            every_worker = CollectorRegistry()
            multiprocess.MultiProcessCollector(every_worker)  # type: ignore[no-untyped-call]
            return generate_latest(every_worker)
        return generate_latest(self.registry)
