"""The gateway with fakes injected through FastAPI dependencies: no Redis, no endpoint process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from sagegate.endpoints import EndpointRejected, EndpointResponse, EndpointUnavailable
from sagegate.gateway.app import create_app, current_predictor
from sagegate.gateway.cache import PredictionCache
from sagegate.gateway.catalog import InMemoryCatalog
from sagegate.gateway.config import GatewaySettings
from sagegate.gateway.metrics import GatewayMetrics
from sagegate.gateway.online_features import OnlineFeatureStore
from sagegate.gateway.prediction_log import JsonLinesLog
from sagegate.gateway.predictor import Predictor
from sagegate.local.data import fraud_features, generate_transactions
from sagegate.manifest import ModelManifest
from sagegate.routing import Route


@dataclass
class FakeEndpoints:
    """Answers P(fraud) = amount / 1000 per endpoint, or fails as told, or hangs (a variant of
    `hanging` answers after that many seconds, cut short by the call's timeout); records every call."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    failing: dict[str, Exception] = field(default_factory=dict)
    hanging: dict[str, float] = field(default_factory=dict)

    async def invoke(self, endpoint: str, body: bytes, **kwargs: Any) -> EndpointResponse:
        self.calls.append({"endpoint": endpoint, "body": orjson.loads(body), **kwargs})
        if endpoint in self.failing:
            raise self.failing[endpoint]
        delay = self.hanging.get(kwargs.get("target_variant") or "")
        if delay is not None:
            if delay > kwargs["timeout"]:
                await asyncio.sleep(kwargs["timeout"])
                raise EndpointUnavailable(f"endpoint {endpoint!r}: no answer within {kwargs['timeout'] * 1000:.0f} ms")
            await asyncio.sleep(delay)
        p = min(orjson.loads(body)["features"]["amount"] / 1000, 1.0)
        answer = {
            "predictions": [{"prediction": p, "label": "fraud" if p >= 0.5 else "legit", "confidence": max(p, 1 - p)}]
        }
        return EndpointResponse(orjson.dumps(answer), "application/json", kwargs.get("target_variant"))


def manifest(version: str, **overrides: Any) -> ModelManifest:
    features = fraud_features(generate_transactions(200, seed=1))
    return ModelManifest.model_validate(
        {
            "name": overrides.pop("name", "fraud"),
            "version": version,
            "framework": "sklearn",
            "sha256": "0" * 64,
            "features": [f.model_dump() for f in features],
            "sample": [{"amount": 1.0, "hour": 1, "merchant_category": "fuel"}],
            "outputs": {"task": "binary", "labels": ["legit", "fraud"], "onnx_output": "probabilities"},
            **overrides,
        }
    )


@dataclass
class Gateway:
    client: TestClient
    endpoints: FakeEndpoints
    catalog: InMemoryCatalog
    metrics: GatewayMetrics
    log_path: Path
    app: Any

    def predict(self, **body: Any) -> Any:
        return self.client.post("/v1/predict", json={"model": "fraud", **body})

    def log_lines(self) -> list[dict[str, Any]]:
        return (
            [orjson.loads(line) for line in self.log_path.read_bytes().splitlines()] if self.log_path.exists() else []
        )


GOOD = {"amount": 420.0, "hour": 3, "merchant_category": "gaming", "channel": "web"}


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    def make(
        routes: list[dict[str, Any]] | None = None,
        manifests: list[ModelManifest] | None = None,
        max_body_bytes: int = 4096,
        predictor_options: dict[str, Any] | None = None,
        api_key: str | None = None,
    ) -> Gateway:
        catalog = InMemoryCatalog(
            manifests if manifests is not None else [manifest("1"), manifest("2", default_prediction=0.0)],
            [
                Route.model_validate(r)
                for r in routes
                or [
                    {
                        "model": "fraud",
                        "endpoint": "fraud-prod",
                        "variants": [
                            {"name": "v1", "model_version": "1", "weight": 80},
                            {"name": "v2", "model_version": "2", "weight": 20},
                        ],
                    }
                ]
            ],
        )
        endpoints, metrics = FakeEndpoints(), GatewayMetrics(emit=False)
        log_path = tmp_path / "predictions.jsonl"
        predictor = Predictor(
            catalog=catalog,
            endpoints=endpoints,
            cache=PredictionCache(None),
            features=OnlineFeatureStore(None),
            prediction_log=JsonLinesLog(log_path),
            metrics=metrics,
            **(predictor_options or {}),
        )
        app = create_app(GatewaySettings(max_body_bytes=max_body_bytes, api_key=api_key))
        app.dependency_overrides[current_predictor] = lambda: predictor
        return Gateway(TestClient(app), endpoints, catalog, metrics, log_path, app)

    yield make


__all__ = ["GOOD", "EndpointRejected", "EndpointUnavailable", "FakeEndpoints", "Gateway", "manifest"]
