"""Edge inputs at the gateway: each gets a 4xx naming the field and the reason in the gateway's
error format (or its body error), never a 500 or a wrong 200; and what typed clients need."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.unit.gateway.conftest import GOOD, Gateway, manifest

MakeGateway = Callable[..., Gateway]


def _raw(gw: Gateway, body: bytes, path: str = "/v1/predict", **headers: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    answer = gw.client.post(path, content=body, headers={"Content-Type": "application/json", **headers})
    assert answer.headers["content-type"].startswith("application/json"), answer.text
    return answer.status_code, answer.json()


def _fields(body: dict) -> dict[str, str]:  # type: ignore[type-arg]
    return {f["field"]: f["reason"] for f in body.get("fields", [])}


@pytest.mark.parametrize(
    ("features", "field", "reason"),
    [
        (
            '{"amount": 1' + "0" * 400 + "}",
            "amount",
            "must be a finite number (not NaN or infinite, nor beyond a float's range)",
        ),  # beyond any float
        ('{"amount": 1e400}', "amount", "must be a finite number (not NaN or infinite, nor beyond a float's range)"),
        ('{"amount": NaN}', "amount", "must be a finite number (not NaN or infinite, nor beyond a float's range)"),
        ('{"hour": 123456789012345678901234567890}', "hour", "is beyond +-2**53, the integers a float holds exactly"),
        ('{"merchant_category": "\\ud800"}', "merchant_category", "is not valid Unicode text (a lone surrogate)"),
    ],
)
def test_edge_values_get_a_422_naming_the_field(
    make_gateway: MakeGateway, features: str, field: str, reason: str
) -> None:
    gw = make_gateway()
    good = {k: v for k, v in GOOD.items() if f'"{k}"' not in features}
    merged = features[:-1] + ", " + ", ".join(f'"{k}": {__import__("json").dumps(v)}' for k, v in good.items()) + "}"
    status, body = _raw(gw, b'{"model": "fraud", "features": ' + merged.encode() + b"}")
    assert status == 422, body
    assert _fields(body)[field] == reason
    assert gw.endpoints.calls == []  # nothing reached the model


def test_a_value_beyond_the_models_float32_input_is_refused(make_gateway: MakeGateway) -> None:
    """The model takes float32: a value whose transform overflows it would be served as null."""
    from sagegate.manifest import ModelManifest

    base = manifest("1")
    extra = {"name": "score", "type": "float", "required": False, "default": 0.0}
    wide = ModelManifest.model_validate(
        {**base.model_dump(mode="json"), "features": [*base.model_dump(mode="json")["features"], extra]}
    )
    gw = make_gateway(manifests=[wide, manifest("2")])
    status, body = _raw(
        gw,
        b'{"model": "fraud", "version": "1", "features": '
        b'{"amount": 1, "hour": 1, "merchant_category": "gaming", "score": 1e39}}',
    )
    assert (status, _fields(body)) == (422, {"score": "is beyond the range of the model's float32 input"})


def test_a_lone_surrogate_in_a_field_name_is_named_not_a_500(make_gateway: MakeGateway) -> None:
    status, body = _raw(make_gateway(), b'{"model": "fraud", "features": {"am\\ud800": 1}}')
    assert status == 422
    assert _fields(body)["am\\ud800"] == "is not a feature of this model"
    status, body = _raw(make_gateway(), b'{"model": "fr\\ud800ud", "features": {}}')
    assert status == 422 and _fields(body)["model"].startswith("Input should be a valid string")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"model": "fraud", "features": {"merchant_category": "\xff"}}', "the body is not UTF-8 text"),
        (b'{"model": "fraud", "features": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nests arrays or objects too deeply"),
        (b'{"model": "fraud", "features": {"amount": ' + b"1" * 5000 + b"}}", "the body is not valid JSON"),
        (b'{"model": "fraud", "features": {nope}}', "the body is not valid JSON"),
    ],
)
def test_a_body_that_is_not_json_gets_the_gateways_error_format(
    make_gateway: MakeGateway, body: bytes, reason: str
) -> None:
    status, answer = _raw(make_gateway(max_body_bytes=64 * 1024), body)
    assert status == 400
    assert answer["field"] == "body" and reason in answer["error"] and answer["fields"][0]["field"] == "body"


def test_an_oversized_chunked_body_is_413(make_gateway: MakeGateway) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "fraud", "features": {"pad": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}}'

    answer = make_gateway().client.post("/v1/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and answer.json()["field"] == "body"


def test_a_body_without_content_type_is_read_as_json(make_gateway: MakeGateway) -> None:
    """API Gateway validates a body that has no Content-Type as JSON; the gateway reads it so too."""
    gw = make_gateway()
    import json

    answer = gw.client.post("/v1/predict", content=json.dumps({"model": "fraud", "features": GOOD}).encode())
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("outcome", ["NaN", "Infinity", "-Infinity", "[1, 2]", '{"a": 1}', "null"])
def test_feedback_outcomes_must_be_a_label_a_class_or_a_finite_number(make_gateway: MakeGateway, outcome: str) -> None:
    gw = make_gateway()
    status, body = _raw(
        gw, b'{"prediction_id": "' + PID.encode() + b'", "outcome": ' + outcome.encode() + b"}", "/v1/feedback"
    )
    assert status == 422 and "outcome" in _fields(body)
    assert all(line.get("type") != "feedback" for line in gw.log_lines())  # nothing logged


PID = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("body", "status", "field", "says"),
    [
        ({"prediction_id": PID, "outcome": 7, "model": "fraud"}, 422, "outcome", "class index 0..1, got 7"),
        ({"prediction_id": PID, "outcome": "maybe", "model": "fraud"}, 422, "outcome", "not one of the model's labels"),
        ({"prediction_id": PID, "outcome": 2.5, "model": "fraud"}, 422, "outcome", "got 2.5"),
        ({"prediction_id": PID, "outcome": 1, "model": "churn"}, 404, None, "unknown model 'churn'"),
        ({"prediction_id": "abc", "outcome": 1, "model": "fraud"}, 422, "prediction_id", "pattern"),
    ],
)
def test_feedback_a_model_could_not_have_predicted_is_refused(
    make_gateway: MakeGateway, body: dict[str, Any], status: int, field: str | None, says: str
) -> None:
    """Ground truth feeds the A/B report and accuracy monitoring: an outcome outside the model's
    labels, or for an id no prediction had, would count as a wrong answer that never happened."""
    gw = make_gateway()
    answer = gw.client.post("/v1/feedback", json=body)
    assert answer.status_code == status, answer.text
    assert says in answer.text
    if field is not None:
        assert field in answer.text
    assert all(line.get("type") != "feedback" for line in gw.log_lines())
    # the model's own labels and class indexes are accepted
    labels = gw.client.get("/v1/models/fraud").json()["manifests"]["1"]["outputs"]["labels"]
    for outcome in (*labels, 0, 1, True):
        ok = gw.client.post("/v1/feedback", json={"prediction_id": PID, "outcome": outcome, "model": "fraud"})
        assert ok.status_code == 202, (outcome, ok.text)


def test_multiclass_answers_carry_their_probabilities(make_gateway: MakeGateway) -> None:
    gw = make_gateway()
    real = gw.endpoints.invoke

    async def three_classes(endpoint: str, body: bytes, **kwargs: object):  # type: ignore[no-untyped-def]
        answer = await real(endpoint, body, **kwargs)
        import orjson

        return type(answer)(
            orjson.dumps(
                {
                    "predictions": [
                        {
                            "prediction": "b",
                            "label": "b",
                            "confidence": 0.7,
                            "probabilities": {"a": 0.1, "b": 0.7, "c": 0.2},
                        }
                    ]
                }
            ),
            answer.content_type,
            answer.invoked_variant,
        )

    gw.endpoints.invoke = three_classes  # type: ignore[method-assign]
    body = gw.predict(features=GOOD).json()
    assert body["probabilities"] == {"a": 0.1, "b": 0.7, "c": 0.2}


def test_each_models_features_have_a_schema_and_typed_request_in_openapi(make_gateway: MakeGateway) -> None:
    gw = make_gateway()
    described = gw.client.get("/v1/models/fraud").json()
    schema = described["schemas"]["1"]
    assert schema["properties"]["hour"] == {"type": "integer", "minimum": 0, "maximum": 23}
    assert sorted(schema["properties"]["channel"]["enum"]) == ["atm", "mobile", "pos", "web"]
    assert "amount" in schema["required"] and "channel" not in schema["required"]
    document = gw.client.get("/openapi.json").json()
    body = document["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["discriminator"]["mapping"] == {"fraud": "#/components/schemas/PredictBody_Fraud"}
    typed = document["components"]["schemas"]["PredictBody_Fraud"]
    assert typed["properties"]["features"]["properties"]["merchant_category"]["type"] == "string"
    assert typed["properties"]["model"] == {"const": "fraud"}
    for status in ("400", "413", "422"):
        assert "ErrorBody" in str(document["paths"]["/v1/predict"]["post"]["responses"][status])


def test_a_manifest_version_2_is_what_the_schema_of_version_2_says(make_gateway: MakeGateway) -> None:
    gw = make_gateway(manifests=[manifest("1"), manifest("2", default_prediction=0.0)])
    schemas = gw.client.get("/v1/models/fraud").json()["schemas"]
    assert set(schemas) == {"1", "2"}


@pytest.mark.parametrize(
    "labels", [["legit", "fraud"], ["0", "1"], ["1", "2"], ["1", "2", "3"], ["-1", "0", "1"], ["b", "a", "1"]]
)
def test_feedback_the_gateway_takes_is_feedback_monitoring_can_read(labels: list[str]) -> None:
    """The gateway accepts a classifier's outcome exactly when monitoring reads it as a class (a number
    is the label it spells, else an index): before, labels 1, 2, 3 refused the outcome 3 (not an
    index 0..2) that monitoring reads as the label "3"."""
    from sagegate.gateway.schemas import outcome_problem
    from sagegate.manifest import Outputs, Task
    from sagegate.monitoring.baseline import class_index

    task = Task.BINARY if len(labels) == 2 else Task.MULTICLASS
    outputs = Outputs(task=task, labels=labels, onnx_output="probabilities")
    for outcome in [*range(-2, 6), *labels, "x"]:
        accepted = outcome_problem(outcome, outputs) is None
        assert accepted == (class_index(outcome, labels) is not None), outcome
