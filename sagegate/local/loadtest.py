"""`sagegate bench`: bounded load on the prediction API, and what it measured, as a histogram."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sagegate.client import ApiError, GatewayClient

__all__ = ["LoadResult", "run_load", "show_load"]

_EDGES_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


@dataclass
class LoadResult:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    error_kinds: Counter[str] = field(default_factory=Counter)
    variants: Counter[str] = field(default_factory=Counter)
    cache_hits: int = 0
    degraded: int = 0
    seconds: float = 0.0


def run_load(
    client: GatewayClient,
    model: str,
    records: list[dict[str, Any]],
    *,
    requests: int,
    concurrency: int,
    users: int,
    console: Console,
    in_order: bool = False,
) -> LoadResult:
    """`requests` predictions, `concurrency` at a time: records chosen at random (with repeats), or
    `in_order` (each record once, from the start again if there are fewer than requests)."""
    result = LoadResult()
    rng = np.random.default_rng(0)
    picks = [i % len(records) for i in range(requests)] if in_order else rng.integers(len(records), size=requests)
    plan = [(records[int(i)], f"bench-user-{int(rng.integers(users))}") for i in picks]

    def one(item: tuple[dict[str, Any], str]) -> None:
        features, user = item
        started = time.perf_counter()
        try:
            answer = client.predict(model, features, user_id=user)
        except ApiError as exc:
            result.errors += 1
            result.error_kinds[str(exc.status)] += 1
        else:
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            result.variants[str(answer.get("variant"))] += 1
            result.cache_hits += bool(answer.get("cache_hit"))
            result.degraded += bool(answer.get("degraded"))
        progress.advance(task)

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task(f"{requests} predictions, {concurrency} in flight", total=requests)
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, plan))
        result.seconds = time.perf_counter() - started
    return result


def show_load(console: Console, result: LoadResult) -> None:
    done = len(result.latencies_ms)
    lat = np.array(result.latencies_ms) if done else np.zeros(1)
    console.print(
        f"{done} answered, {result.errors} failed {dict(result.error_kinds) or ''} in {result.seconds:.1f} s: "
        f"{done / max(result.seconds, 1e-9):.0f} req/s; p50 {np.percentile(lat, 50):.2f} ms, "
        f"p90 {np.percentile(lat, 90):.2f} ms, p99 {np.percentile(lat, 99):.2f} ms (client-side); "
        f"cache hits {result.cache_hits / max(done, 1):.1%}, degraded {result.degraded}"
    )
    table = Table(title="latency histogram (client-side)")
    table.add_column("up to", justify="right")
    table.add_column("requests", justify="right")
    table.add_column("", justify="left")
    counts, lower = [], 0.0
    for edge in (*_EDGES_MS, float("inf")):
        counts.append((edge, int(((lat > lower) & (lat <= edge)).sum()) if done else 0))
        lower = edge
    peak = max((c for _, c in counts), default=1) or 1
    for edge, count in counts:
        if count:
            label = "more" if edge == float("inf") else f"{edge:g} ms"
            table.add_row(label, str(count), "█" * max(1, round(40 * count / peak)))
    console.print(table)
    if result.variants:
        console.print("variants: " + ", ".join(f"{v} {c / done:.1%}" for v, c in sorted(result.variants.items())))
