"""What the prediction log records for monitoring: validated features (sensitive ones dropped or
hashed), score, flags; refused requests with their reasons; feedback beside them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sagegate.keys import logged_hash
from sagegate.local.data import fraud_features, generate_transactions
from tests.unit.gateway.conftest import GOOD, Gateway, manifest

MakeGateway = Callable[..., Gateway]


def _marked(version: str, **marks: dict[str, Any]) -> Any:
    features = [
        {**f.model_dump(exclude_none=True), **marks.get(f.name, {})}
        for f in fraud_features(generate_transactions(200, seed=1))
    ]
    return manifest(version, features=features)


def test_a_prediction_logs_its_validated_features_score_and_flags(make_gateway: MakeGateway) -> None:
    gw = make_gateway()
    body = gw.predict(features={**GOOD, "is_foreign": True}, user_id="u-1").json()
    line = gw.log_lines()[-1]
    assert line["prediction_id"] == body["prediction_id"]
    # validated: a boolean logged as the number the model got; what the caller left out is null, not
    # the default the model was given (so the missing rate is the caller's)
    assert line["features"]["is_foreign"] == 1.0
    assert line["features"]["amount"] == 420.0 and line["features"]["merchant_category"] == "gaming"
    assert line["features"]["transactions_24h"] is None and line["features"]["card_present"] is None
    assert set(line["features"]) == {f.name for f in manifest("1").features}
    assert line["score"] == body["prediction"] == 0.42
    assert (line["cache_hit"], line["degraded"], line["version"], line["variant"]) == (
        False,
        False,
        body["model_version"],
        body["variant"],
    )
    assert line["timestamp"].endswith("+00:00")


def test_sensitive_features_are_dropped_or_hashed(make_gateway: MakeGateway) -> None:
    marked = [
        _marked(v, amount={"sensitive": "drop"}, merchant_category={"sensitive": "hash"}, channel={"protected": True})
        for v in ("1", "2")
    ]
    gw = make_gateway(manifests=marked)
    gw.predict(features=GOOD, user_id="u-2")
    logged = gw.log_lines()[-1]["features"]
    assert "amount" not in logged
    assert "420" not in str(logged)
    assert logged["merchant_category"] == logged_hash("fraud", "merchant_category", "gaming") != "gaming"
    assert logged["channel"] == "web"  # protected, not sensitive: logged as it is, for the bias check
    gw.predict(features={**GOOD, "merchant_category": "fuel"}, user_id="u-2")
    assert gw.log_lines()[-1]["features"]["merchant_category"] != logged["merchant_category"]


def test_a_refused_request_is_logged_with_its_reasons_per_field(make_gateway: MakeGateway) -> None:
    gw = make_gateway()
    answer = gw.predict(features={**GOOD, "hour": "three", "amount": -1}, user_id="u-3")
    assert answer.status_code == 422
    line = gw.log_lines()[-1]
    assert line["type"] == "rejected" and line["model"] == "fraud" and line["version"] in {"1", "2"}
    assert set(line["rejected"]) == {"hour", "amount"}
    assert "features" not in line


def test_feedback_lands_beside_the_prediction_it_names(make_gateway: MakeGateway) -> None:
    gw = make_gateway()
    body = gw.predict(features=GOOD, user_id="u-4").json()
    gw.client.post("/v1/feedback", json={"prediction_id": body["prediction_id"], "outcome": 1, "model": "fraud"})
    prediction, feedback = gw.log_lines()[-2:]
    assert feedback["type"] == "feedback" and feedback["prediction_id"] == prediction["prediction_id"]
