"""Per model and variant metrics in CloudWatch EMF (Powertools), flushed once per invocation.

Latency, cache hits and misses, degraded answers, feature-store and cache outages, errors. The
values are kept in memory between flushes and also summed for the process's lifetime (`totals`),
which the local stack and the tests read.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

__all__ = ["GatewayMetrics"]

_UNITS = {"latency_ms": "Milliseconds"}


class GatewayMetrics:
    def __init__(self, *, namespace: str = "sagegate", service: str = "gateway", emit: bool = True) -> None:
        self.namespace = namespace
        self.service = service
        self.emit = emit
        self._pending: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.totals: dict[tuple[str, str, str], float] = defaultdict(float)
        self._lock = threading.Lock()

    def add(self, model: str, variant: str, name: str, value: float = 1.0) -> None:
        with self._lock:
            self._pending[(model, variant)][name].append(value)
            self.totals[(model, variant, name)] += value

    def total(self, name: str, model: str | None = None, variant: str | None = None) -> float:
        return sum(
            v for (m, var, n), v in self.totals.items() if n == name and model in (None, m) and variant in (None, var)
        )

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, defaultdict(lambda: defaultdict(list))
        if not self.emit or not pending:
            return
        from aws_lambda_powertools import Metrics

        for (model, variant), values in pending.items():
            metrics = Metrics(namespace=self.namespace, service=self.service)
            metrics.add_dimension("model", model)
            metrics.add_dimension("variant", variant or "none")
            for name, samples in values.items():
                unit: Any = _UNITS.get(name, "Count")
                for sample in samples[:100]:  # EMF takes at most 100 values per metric
                    metrics.add_metric(name=name, unit=unit, value=sample)
            metrics.flush_metrics()
