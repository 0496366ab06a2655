"""POST /v1/predict and friends, through FastAPI with fakes for the endpoint, cache and feature store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.unit.gateway.conftest import GOOD, EndpointRejected, EndpointUnavailable, Gateway, manifest

MakeGateway = Callable[..., Gateway]


def test_a_prediction_names_its_version_variant_and_id(make_gateway: MakeGateway) -> None:
    gw = make_gateway()
    answer = gw.predict(features=GOOD, user_id="u-1")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["prediction"] == pytest.approx(0.42) and body["label"] == "legit"
    assert (body["variant"], body["model_version"]) in {("v1", "1"), ("v2", "2")}
    assert body["cache_hit"] is False and body["degraded"] is False and len(body["prediction_id"]) == 32
    call = gw.endpoints.calls[-1]
    assert (call["endpoint"], call["target_variant"], call["inference_id"]) == (
        "fraud-prod",
        body["variant"],
        body["prediction_id"],
    )
    # defaults from the manifest are filled before the endpoint sees the record
    assert call["body"]["features"]["transactions_24h"] == 0
    logged = gw.log_lines()[-1]
    assert (logged["prediction_id"], logged["variant"], len(logged["features_hash"])) == (
        body["prediction_id"],
        body["variant"],
        64,
    )
    assert gw.metrics.total("latency_ms", model="fraud") > 0


def test_the_same_user_gets_the_same_variant_and_a_pin_wins(make_gateway: MakeGateway) -> None:
    gw = make_gateway()
    variants = {gw.predict(features=GOOD, user_id="sticky").json()["variant"] for _ in range(10)}
    assert len(variants) == 1
    pinned = gw.predict(features=GOOD, user_id="sticky", version="2").json()
    assert (pinned["variant"], pinned["model_version"]) == ("v2", "2")
    unknown = gw.predict(features=GOOD, version="7")
    assert unknown.status_code == 422 and unknown.json()["field"] == "version"


@pytest.mark.parametrize(
    ("features", "named"),
    [
        ({"hour": 3, "merchant_category": "gaming"}, {"amount": "is required"}),
        ({**GOOD, "colour": "red"}, {"colour": "is not a feature of this model"}),
        ({**GOOD, "hour": "three"}, {"hour": "expected an integer, got str"}),
        (
            {**GOOD, "hour": 25, "amount": -1},
            {"hour": "25 is above the maximum 23", "amount": "-1 is below the minimum 0"},
        ),
        ({**GOOD, "channel": "fax"}, {"channel": "'fax' is not one of the categories (atm, mobile, pos, web)"}),
    ],
)
def test_bad_features_are_422_naming_each_field(
    make_gateway: MakeGateway, features: dict[str, Any], named: dict[str, str]
) -> None:
    gw = make_gateway()
    answer = gw.predict(features=features)
    assert answer.status_code == 422
    assert {f["field"]: f["reason"] for f in answer.json()["fields"]} == named
    assert gw.endpoints.calls == []  # nothing reached the model; no prediction was logged, the refusal was
    assert [(line["type"], line["rejected"]) for line in gw.log_lines()] == [("rejected", named)]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"model": "fraud"}, 422, "features"),
        ({"model": "fraud", "features": GOOD, "surprise": 1}, 422, "surprise"),
        ({"model": "", "features": GOOD}, 422, "model"),
        ({"model": "fraud", "features": GOOD, "user_id": 5}, 422, "user_id"),
    ],
)
def test_malformed_bodies(make_gateway: MakeGateway, body: dict[str, Any], status: int, field: str) -> None:
    answer = make_gateway().client.post("/v1/predict", json=body)
    assert answer.status_code == status
    assert field in [f["field"] for f in answer.json()["fields"]]


def test_unknown_model_and_oversized_body(make_gateway: MakeGateway) -> None:
    gw = make_gateway()
    missing = gw.client.post("/v1/predict", json={"model": "churn", "features": GOOD})
    assert missing.status_code == 404 and "churn" in missing.json()["error"]
    big = gw.client.post("/v1/predict", json={"model": "fraud", "features": {**GOOD, "pad": "x" * 5000}})
    assert big.status_code == 413 and big.json()["field"] == "body"
    not_json = gw.client.post("/v1/predict", content=b"{nope", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400 and not_json.json()["error"].startswith("the body is not valid JSON")


def test_endpoint_failure_falls_back_to_the_manifests_default(make_gateway: MakeGateway) -> None:
    gw = make_gateway()
    gw.endpoints.failing["fraud-prod"] = EndpointUnavailable("ThrottlingException: slow down")
    answer = gw.predict(features=GOOD, version="2").json()
    assert answer["degraded"] is True and answer["prediction"] == 0.0
    assert "ThrottlingException" in answer["degraded_reason"]
    assert gw.metrics.total("degraded", model="fraud") == 1
    assert gw.log_lines()[-1]["degraded"] is True


def test_endpoint_failure_uses_the_fallback_model(make_gateway: MakeGateway) -> None:
    gw = make_gateway(
        routes=[
            {
                "model": "fraud",
                "endpoint": "fraud-prod",
                "fallback": "fraud-rules",
                "variants": [{"name": "v1", "model_version": "1", "weight": 1}],
            },
            {
                "model": "fraud-rules",
                "endpoint": "rules-prod",
                "variants": [{"name": "r1", "model_version": "1", "weight": 1}],
            },
        ],
        manifests=[manifest("1"), manifest("1", name="fraud-rules")],
    )
    gw.endpoints.failing["fraud-prod"] = EndpointUnavailable("ModelError: boom")
    answer = gw.predict(features=GOOD).json()
    assert answer["degraded"] is True and answer["variant"] == "r1"
    assert answer["prediction"] == pytest.approx(0.42)
    assert [c["endpoint"] for c in gw.endpoints.calls] == ["fraud-prod", "rules-prod"]


def test_no_degraded_answer_possible_is_a_clear_503(make_gateway: MakeGateway) -> None:
    gw = make_gateway()
    gw.endpoints.failing["fraud-prod"] = EndpointUnavailable("ServiceUnavailable: down")
    answer = gw.predict(features=GOOD, version="1")
    assert answer.status_code == 503
    assert "unavailable" in answer.json()["error"] and answer.json()["model"] == "fraud"


def test_a_model_refusing_the_input_is_422(make_gateway: MakeGateway) -> None:
    gw = make_gateway()
    gw.endpoints.failing["fraud-prod"] = EndpointRejected("record 0, field 'hour': nope", 400)
    answer = gw.predict(features=GOOD)
    assert answer.status_code == 422 and "field 'hour'" in answer.json()["error"]


def test_models_feedback_health_and_openapi(make_gateway: MakeGateway) -> None:
    gw = make_gateway()
    models = gw.client.get("/v1/models").json()["models"]
    assert models[0]["name"] == "fraud" and models[0]["versions"] == ["1", "2"]
    assert models[0]["route"]["variants"][1]["weight"] == 20
    described = gw.client.get("/v1/models/fraud").json()
    assert described["manifests"]["2"]["default_prediction"] == 0.0
    assert gw.client.get("/v1/models/churn").status_code == 404
    pid = gw.predict(features=GOOD).json()["prediction_id"]
    accepted = gw.client.post("/v1/feedback", json={"prediction_id": pid, "outcome": 1, "model": "fraud"})
    assert accepted.status_code == 202
    assert gw.log_lines()[-1] == {**gw.log_lines()[-1], "type": "feedback", "prediction_id": pid, "outcome": 1}
    assert gw.client.get("/health").json()["status"] == "ok"
    spec = gw.client.get("/openapi.json").json()
    assert "/v1/predict" in spec["paths"] and gw.client.get("/docs").status_code == 200


def test_every_route_runs_on_the_event_loop(make_gateway: MakeGateway) -> None:
    """No route is a plain function: FastAPI would run it on its 40-thread pool, where requests
    waiting on a hung model hold every thread and the others queue behind them."""
    import inspect

    from fastapi.routing import APIRoute

    gw = make_gateway()
    routes = [r for r in gw.app.routes if isinstance(r, APIRoute)]
    assert {r.path for r in routes} >= {"/v1/predict", "/v1/models", "/v1/feedback", "/v1/batch_predict", "/health"}
    assert [r.path for r in routes if not inspect.iscoroutinefunction(r.endpoint)] == []
    answer = gw.predict(features=GOOD, version="1")
    assert answer.status_code == 200 and answer.json()["model_version"] == "1"
    assert len(gw.log_lines()) == 1  # flushed after the request


def test_explain_asks_the_endpoint_for_explanations_and_refuses_a_model_without_an_explainer(
    make_gateway: MakeGateway,
) -> None:
    explainer = {"method": "tree", "output_space": "margin", "sha256": "1" * 64, "background_rows": 8, "importance": {}}
    gw = make_gateway(manifests=[manifest("1"), manifest("2", explainer=explainer)])
    refused = gw.client.post("/v1/explain", json={"model": "fraud", "features": GOOD, "version": "1"})
    assert refused.status_code == 422 and refused.json()["field"] == "explain"
    assert "has no explainer" in refused.json()["error"]
    assert not gw.endpoints.calls  # refused before the endpoint is asked
    answered = gw.client.post("/v1/explain", json={"model": "fraud", "features": GOOD, "version": "2"})
    assert answered.status_code == 200, answered.text
    call = gw.endpoints.calls[-1]
    assert call["custom_attributes"] == "explain=true"
    assert call["timeout"] > 0.9  # an explanation's budget, not a prediction's 100 ms
    plain = gw.predict(features=GOOD, version="2")
    assert gw.endpoints.calls[-1]["custom_attributes"] is None
    assert plain.json()["explanation"] is None
