"""What the prediction log costs on the gateway's path, per request, against no log, in one run.

    python benchmarks/prediction_log_overhead.py [--requests 4000] [--rounds 15]

The gateway's data plane (sagegate.gateway.predictor.Predictor: validation, routing, the answer, the
accounting) answers fraud requests in process from an endpoint answering a constant and with the
cache off, so that the log is the part that differs: the JSON Lines log the local stack uses (each
record built with its validated features, serialised, and written by a flush every 200 requests, as
the long-running gateway flushes in batches).
Against them, a predictor that builds no log record at all (its accounting keeps only the metrics),
the gateway as it would be without a prediction log. They take turns in rounds of `--requests`
requests each (interleaved, so drift of the machine hits both); the cost is the median over rounds
of the difference of the mean time per request.
Target: logging adds < 0.1 ms per request.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sagegate.endpoints import EndpointResponse  # noqa: E402
from sagegate.gateway.cache import PredictionCache  # noqa: E402
from sagegate.gateway.catalog import InMemoryCatalog  # noqa: E402
from sagegate.gateway.metrics import GatewayMetrics  # noqa: E402
from sagegate.gateway.online_features import OnlineFeatureStore  # noqa: E402
from sagegate.gateway.prediction_log import JsonLinesLog, NullLog, PredictionLogProtocol  # noqa: E402
from sagegate.gateway.predictor import Predictor, PredictRequest  # noqa: E402
from sagegate.local.data import fraud_features, generate_transactions  # noqa: E402
from sagegate.manifest import ModelManifest  # noqa: E402
from sagegate.routing import Route  # noqa: E402

ANSWER = orjson.dumps({"predictions": [{"prediction": 0.12, "label": "legit", "confidence": 0.88}]})
FLUSH_EVERY = 200


class ConstantEndpoint:
    async def invoke(self, endpoint: str, body: bytes, **kwargs: Any) -> EndpointResponse:
        return EndpointResponse(ANSWER, "application/json", kwargs.get("target_variant"))


class Unlogged(Predictor):
    """The gateway without a prediction log: no record is built (the metrics are kept, as they are)."""

    def _account(self, model: str, result: Any, key: str, **_: Any) -> None:
        variant = result.variant or ""
        self.metrics.add(model, variant, "latency_ms", result.latency_ms)
        self.metrics.add(model, variant, "cache_hits" if result.cache_hit else "cache_misses")
        if result.degraded:
            self.metrics.add(model, variant, "degraded")
        elif result.confidence is not None:
            self.metrics.add(model, variant, "confidence", result.confidence)


def predictor(log: PredictionLogProtocol, manifest: ModelManifest, kind: type[Predictor] = Predictor) -> Predictor:
    route = Route.model_validate(
        {"model": "fraud", "endpoint": "fraud-prod", "variants": [{"name": "v1", "model_version": "1", "weight": 1}]}
    )
    return kind(
        catalog=InMemoryCatalog([manifest], [route]),
        endpoints=ConstantEndpoint(),
        cache=PredictionCache(None),
        features=OnlineFeatureStore(None),
        prediction_log=log,
        metrics=GatewayMetrics(emit=False),
    )


async def one_round(p: Predictor, requests: list[PredictRequest]) -> float:
    """Mean ms per request, flushes included."""
    started = time.perf_counter()
    for i, request in enumerate(requests, 1):
        await p.predict(request)
        if i % FLUSH_EVERY == 0:
            p.log.flush()
            p.metrics.flush()
    p.log.flush()
    return (time.perf_counter() - started) * 1000 / len(requests)


async def measure(args: argparse.Namespace, workdir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    data = generate_transactions(args.requests, seed=11)
    manifest = ModelManifest.model_validate(
        {
            "name": "fraud",
            "version": "1",
            "framework": "sklearn",
            "sha256": "0" * 64,
            "features": [f.model_dump() for f in fraud_features(data)],
            "sample": data.records[:1],
            "outputs": {"task": "binary", "labels": ["legit", "fraud"], "onnx_output": "probabilities"},
        }
    )
    requests = [PredictRequest("fraud", r, f"u{i}") for i, r in enumerate(data.records)]
    log_path = workdir / "predictions.jsonl"
    logged, unlogged = predictor(JsonLinesLog(log_path), manifest), predictor(NullLog(), manifest, Unlogged)
    await one_round(logged, requests[:500])  # warm-up: validators, the file, the allocator
    await one_round(unlogged, requests[:500])
    with_log, without = [], []
    for _ in range(args.rounds):
        without.append(await one_round(unlogged, requests))
        with_log.append(await one_round(logged, requests))
        log_path.unlink()  # the file's growth is not the request's cost
    differences = [a - b for a, b in zip(with_log, without, strict=True)]
    added = statistics.median(differences)
    base = statistics.median(without)
    table = Table(title=f"gateway data plane, ms per request ({args.rounds} rounds of {args.requests}, median)")
    for column in ("log", "ms / request", "vs no log"):
        table.add_column(column, justify="right")
    table.add_row("none (no record built)", f"{base:.4f}", "1.00x")
    table.add_row(
        "JSON Lines, features", f"{statistics.median(with_log):.4f}", f"{statistics.median(with_log) / base:.3f}x"
    )
    console = Console(width=120)
    console.print(table)
    ok = added < 0.1
    console.print(
        f"[{'green' if ok else 'red'}]{'PASS' if ok else 'FAIL'}[/] logging adds {added * 1000:.1f} µs per request "
        f"(target < 100 µs; the rounds' differences {min(differences) * 1000:.1f}..{max(differences) * 1000:.1f} µs)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sagegate-log-bench-") as workdir:
        asyncio.run(measure(args, Path(workdir)))


if __name__ == "__main__":
    main()
