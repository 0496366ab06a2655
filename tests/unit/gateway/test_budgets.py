"""Time budgets and bulkheads: a hung variant degrades within its budget and cannot hold up another.

The endpoint is a fake that can hang per variant (tests/unit/gateway/conftest.py); the requests go
through the real FastAPI app concurrently (httpx over ASGI, one event loop), so what is tested is
the gateway's own scheduling: no thread pool to exhaust, a budget per request, a bulkhead per variant.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from sagegate.gateway.predictor import Budget, Bulkhead
from tests.unit.gateway.conftest import GOOD, Gateway, manifest

MakeGateway = Callable[..., Gateway]
ROUTE = {
    "model": "fraud",
    "endpoint": "fraud-prod",
    "variants": [
        {"name": "v1", "model_version": "1", "weight": 50},
        {"name": "v2", "model_version": "2", "weight": 50},
    ],
}
DEFAULTS = [manifest("1", default_prediction=0.0), manifest("2", default_prediction=0.0)]


async def _post(app: Any, bodies: list[dict[str, Any]]) -> list[tuple[float, httpx.Response]]:
    """Every body at once; (seconds until its answer, the answer) in the order given."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        started = time.monotonic()

        async def one(body: dict[str, Any]) -> tuple[float, httpx.Response]:
            answer = await client.post("/v1/predict", json=body)
            return time.monotonic() - started, answer

        return list(await asyncio.gather(*(one(b) for b in bodies)))


def test_a_hung_variant_degrades_within_the_budget(make_gateway: MakeGateway) -> None:
    gw = make_gateway(routes=[ROUTE], manifests=DEFAULTS, predictor_options={"budget": Budget(timeout_ms=150)})
    gw.endpoints.hanging["v1"] = 30.0
    ((seconds, answer),) = asyncio.run(_post(gw.app, [{"model": "fraud", "features": GOOD, "version": "1"}]))
    body = answer.json()
    assert answer.status_code == 200 and body["degraded"] is True and body["prediction"] == 0.0
    assert "within 150 ms" in body["degraded_reason"]
    assert 0.1 <= gw.endpoints.calls[0]["timeout"] <= 0.15  # the call was given what was left of 150 ms
    assert seconds < 5  # not the 30 s the variant would take


def test_a_route_sets_its_own_budget_and_attempts(make_gateway: MakeGateway) -> None:
    gw = make_gateway(routes=[{**ROUTE, "timeout_ms": 40, "attempts": 1}], manifests=DEFAULTS)
    assert gw.predict(features=GOOD, version="2").status_code == 200
    call = gw.endpoints.calls[0]
    assert call["timeout"] <= 0.04 and call["attempts"] == 1


def test_a_hung_variant_fills_only_its_own_bulkhead(make_gateway: MakeGateway) -> None:
    """40 requests to the hung v1 and, among them, requests to v2: v2 answers at once, normally;
    of v1's, 8 wait in the bulkhead until the budget ends and the rest degrade without waiting."""
    gw = make_gateway(
        routes=[ROUTE],
        manifests=DEFAULTS,
        predictor_options={"budget": Budget(timeout_ms=1500), "bulkhead": Bulkhead(limit=8)},
    )
    gw.endpoints.hanging["v1"] = 30.0
    hung = [{"model": "fraud", "features": {**GOOD, "amount": float(i)}, "version": "1"} for i in range(40)]
    healthy = [{"model": "fraud", "features": {**GOOD, "amount": 500.0 + i}, "version": "2"} for i in range(5)]
    answers = asyncio.run(_post(gw.app, [*hung[:20], *healthy, *hung[20:]]))
    v1 = [(s, a.json()) for s, a in answers[:20] + answers[25:]]
    v2 = [(s, a.json()) for s, a in answers[20:25]]

    assert all(not body["degraded"] and body["model_version"] == "2" for _, body in v2)
    assert all(body["degraded"] for _, body in v1)
    waited = [s for s, body in v1 if "within" in body["degraded_reason"]]
    turned_away = [s for s, body in v1 if "calls in flight" in body["degraded_reason"]]
    assert (len(waited), len(turned_away)) == (8, 32)
    # v2 answered before any request that waited for the hung variant, as did those turned away.
    assert max(s for s, _ in v2) < min(waited) and max(turned_away) < min(waited)
    assert len([c for c in gw.endpoints.calls if c["target_variant"] == "v1"]) == 8


def test_the_local_api_key_is_required_where_it_is_set(make_gateway: MakeGateway) -> None:
    gw = make_gateway(api_key="s3cret")
    refused = gw.client.post("/v1/predict", json={"model": "fraud", "features": GOOD})
    assert refused.status_code == 401 and "x-api-key" in refused.json()["error"]
    wrong = gw.client.get("/v1/models", headers={"x-api-key": "nope"})
    assert wrong.status_code == 401
    allowed = gw.client.post("/v1/predict", json={"model": "fraud", "features": GOOD}, headers={"x-api-key": "s3cret"})
    assert allowed.status_code == 200
    assert gw.client.get("/health").status_code == 200  # health stays open for the supervisor's probe
