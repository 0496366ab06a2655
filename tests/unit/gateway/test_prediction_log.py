"""What the prediction log records for monitoring: validated features (sensitive ones dropped or
hashed), score, flags; refused requests with their reasons; feedback beside them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from sagegate.gateway.prediction_log import firehose_record
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


def test_firehose_records_carry_feature_values_and_outcomes_as_text(make_gateway: MakeGateway) -> None:
    """What the gateway logs, as Firehose gets it: the Glue table's maps of text (and the outcome's
    text column) hold each value as text, nulls as null; everything else is the JSON line's."""
    gw = make_gateway()
    body = gw.predict(features={**GOOD, "is_foreign": True}, user_id="u-5").json()
    gw.predict(features={**GOOD, "hour": "three"}, user_id="u-5")
    gw.client.post("/v1/feedback", json={"prediction_id": body["prediction_id"], "outcome": 1})
    gw.client.post("/v1/feedback", json={"prediction_id": body["prediction_id"], "outcome": True, "model": "fraud"})
    prediction, refused, feedback, second = gw.log_lines()[-4:]
    raw = [firehose_record(x) for x in (prediction, refused, feedback, second)]
    assert all(r.endswith(b"}\n") and r.count(b"\n") == 1 for r in raw)
    records = [orjson.loads(r) for r in raw]
    features = records[0]["features"]
    # the request's true and 3 are what the log keeps; as text, the numbers the model got
    assert (prediction["features"]["is_foreign"], prediction["features"]["hour"]) == (True, 3)
    assert features["amount"] == "420.0" and features["is_foreign"] == "1.0" and features["hour"] == "3"
    assert features["merchant_category"] == "gaming" and features["transactions_24h"] is None
    assert {k: v for k, v in records[0].items() if k != "features"} == {
        k: v for k, v in prediction.items() if k != "features"
    }
    assert records[1]["rejected"] == refused["rejected"] and records[1]["type"] == "rejected"
    assert (records[2]["outcome"], records[2]["model"], records[3]["outcome"]) == ("1", None, "true")


def test_firehose_text_of_each_kind_of_value() -> None:
    line = {"features": {"a": 12.5, "b": 3.0, "c": 7, "d": True, "e": False, "f": "x", "g": None}, "score": 0.5}
    assert orjson.loads(firehose_record(line)) == {
        "features": {"a": "12.5", "b": "3.0", "c": "7", "d": "1.0", "e": "0.0", "f": "x", "g": None},
        "score": 0.5,
    }
    assert orjson.loads(firehose_record({"type": "feedback", "outcome": True}))["outcome"] == "true"
    assert float(orjson.loads(firehose_record({"features": {"x": 0.1 + 0.2}}))["features"]["x"]) == 0.1 + 0.2
