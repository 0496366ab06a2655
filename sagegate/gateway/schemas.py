"""The request and response bodies of the prediction API, and each model's own request schema.

A model's features are typed by its manifest (types, ranges, categories, which are required), so
`features_schema` writes them as JSON Schema: GET /v1/models/{name} answers it, and the OpenAPI
document (`with_model_schemas`) describes POST /v1/predict as one request shape per deployed model,
told apart by `model`, so that typed clients can be generated for them.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sagegate.manifest import Feature, FeatureType, ModelManifest, Outputs, Task

__all__ = ["ErrorBody", "FeedbackBody", "FieldProblem", "PredictBody", "features_schema", "with_model_schemas"]


class FieldProblem(BaseModel):
    field: str
    reason: str


class ErrorBody(BaseModel):
    """Every error the gateway answers: what went wrong, and per field why, where fields are at fault."""

    error: str
    field: str | None = None
    fields: list[FieldProblem] | None = None
    model: str | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "the body is not a JSON document"),
        (401, "the API key is missing or wrong (where the gateway requires one)"),
        (404, "no such model, version or job"),
        (413, "the body is over the size limit"),
        (415, "the body is not JSON"),
        (422, "a field breaks its rules (each is named)"),
        (503, "no prediction could be made, not even a degraded one"),
    )
}


class PredictBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=63, examples=["fraud"])
    features: dict[str, Any] = Field(
        examples=[{"amount": 42.5, "hour": 3, "merchant_category": "gaming"}],
        description="the model's features: GET /v1/models/{name} answers their schema (`schema`)",
    )
    user_id: str | None = Field(default=None, min_length=1, max_length=256)
    version: str | None = Field(default=None, min_length=1, max_length=64)
    explain: bool = Field(
        default=False, description="answer each feature's contribution too (as POST /v1/explain does)"
    )


class FeedbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prediction_id: str = Field(
        pattern=r"^[0-9a-f]{32}$", description="the prediction_id /v1/predict answered (32 hex digits)"
    )
    outcome: Any = Field(
        description="the ground truth: a label, a class or a finite value",
        json_schema_extra={"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]},
    )
    model: str | None = None

    @field_validator("outcome", mode="before")
    @classmethod
    def _an_answer(cls, outcome: Any) -> bool | int | float | str:
        if isinstance(outcome, bool | int | str) or (isinstance(outcome, float) and math.isfinite(outcome)):
            return outcome
        raise ValueError("must be a label (a string), a class (an integer or a boolean) or a finite number")


_JSON_TYPES = {
    FeatureType.FLOAT: "number",
    FeatureType.INT: "integer",
    FeatureType.BOOL: "boolean",
    FeatureType.CATEGORICAL: "string",
    FeatureType.STRING: "string",
}


def _feature_schema(feature: Feature) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": _JSON_TYPES[feature.type]}
    if feature.description:
        schema["description"] = feature.description
    if feature.minimum is not None:
        schema["minimum"] = feature.minimum
    if feature.maximum is not None:
        schema["maximum"] = feature.maximum
    if feature.type is FeatureType.CATEGORICAL:
        schema["enum"] = list(feature.categories or [])
    if feature.default is not None:
        schema["default"] = feature.default
    return schema


def features_schema(manifest: ModelManifest) -> dict[str, Any]:
    """The JSON Schema of a version's `features` object."""
    return {
        "title": f"{manifest.name} v{manifest.version} features",
        "type": "object",
        "properties": {f.name: _feature_schema(f) for f in manifest.features},
        "required": [f.name for f in manifest.features if f.required and f.default is None],
        "additionalProperties": False,
    }


def with_model_schemas(document: dict[str, Any], manifests: dict[str, ModelManifest]) -> dict[str, Any]:
    """The OpenAPI document with POST /v1/predict's body as one shape per model (its live version)."""
    if not manifests:
        return document
    document = copy.deepcopy(document)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    choices = []
    for name, manifest in sorted(manifests.items()):
        key = f"PredictBody_{''.join(part.capitalize() for part in name.split('-'))}"
        schemas[key] = {
            "title": f"POST /v1/predict for {name}",
            "type": "object",
            "properties": {
                "model": {"const": name},
                "features": features_schema(manifest),
                "user_id": {"type": "string", "minLength": 1, "maxLength": 256},
                "version": {"type": "string", "minLength": 1, "maxLength": 64},
            },
            "required": ["model", "features"],
            "additionalProperties": False,
        }
        choices.append((name, key))
    body = document["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]
    body["schema"] = {
        "oneOf": [{"$ref": f"#/components/schemas/{key}"} for _, key in choices],
        "discriminator": {
            "propertyName": "model",
            "mapping": {name: f"#/components/schemas/{key}" for name, key in choices},
        },
    }
    return document


def outcome_problem(outcome: bool | int | float | str, outputs: Outputs) -> str | None:
    """Why `outcome` cannot be the truth for a model with these outputs, or None: a label or a class
    index (0/1, true/false for a binary model) for a classifier, a number for a regression."""
    if outputs.task is Task.REGRESSION:
        if isinstance(outcome, bool) or not isinstance(outcome, int | float):
            return f"must be a number for a regression model, got {type(outcome).__name__}"
        return None
    labels = outputs.labels or []
    if isinstance(outcome, str):
        return None if outcome in labels else f"{outcome!r} is not one of the model's labels {labels}"
    if isinstance(outcome, bool):
        return None if outputs.task is Task.BINARY else "must be a label or a class index, not a boolean"
    # A number is read as monitoring reads the logged text (sagegate.monitoring.baseline.class_index):
    # the label it spells (labels 1, 2, 3: 3 is "3"), else a class index.
    if isinstance(outcome, int) and (str(outcome) in labels or 0 <= outcome < len(labels)):
        return None
    return f"must be one of the labels {labels} or a class index 0..{len(labels) - 1}, got {outcome!r}"
