from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from sagegate.manifest import Feature, ModelManifest, Outputs


def feature(**kwargs: Any) -> Feature:
    return Feature.model_validate({"name": "x", "type": "float", **kwargs})


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"type": "categorical", "transforms": [{"kind": "one_hot"}]}, "need categories"),
        (
            {"type": "categorical", "categories": ["a"], "transforms": [{"kind": "impute", "value": "a"}]},
            "exactly one one_hot or ordinal",
        ),
        ({"type": "float", "transforms": [{"kind": "one_hot"}]}, "cannot be one_hot"),
        ({"type": "float", "transforms": [{"kind": "log1p"}]}, "log1p needs a declared minimum"),
        ({"type": "float", "required": False}, "needs a default or an impute"),
        (
            {"type": "float", "transforms": [{"kind": "log1p"}, {"kind": "impute", "value": 0}], "minimum": 0},
            "impute must be the first",
        ),
        ({"type": "float", "default": "zero", "required": False}, "default must be a number"),
        ({"type": "float", "minimum": 2, "maximum": 1}, "minimum > maximum"),
        ({"type": "float", "transforms": [{"kind": "min_max", "min": 1, "max": 1}]}, "max > min"),
        ({"type": "float", "transforms": [{"kind": "standardize", "mean": 0, "std": 0}]}, "greater than 0"),
        ({"type": "string", "transforms": [{"kind": "ordinal"}]}, "needs categories"),
        ({"type": "float", "transforms": [{"kind": "nope"}]}, "does not match any of the expected tags"),
    ],
)
def test_inconsistent_features_are_refused(spec: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        Feature.model_validate({"name": "x", **spec})


def test_feature_width_counts_one_hot_columns() -> None:
    assert feature().width == 1
    assert (
        Feature.model_validate(
            {"name": "c", "type": "categorical", "categories": ["a", "b", "c"], "transforms": [{"kind": "one_hot"}]}
        ).width
        == 3
    )
    assert (
        Feature.model_validate(
            {"name": "c", "type": "string", "transforms": [{"kind": "ordinal", "categories": ["a", "b"]}]}
        ).width
        == 1
    )


@pytest.mark.parametrize(
    ("outputs", "reason"),
    [
        ({"task": "binary", "labels": ["a"], "onnx_output": "p"}, "exactly two labels"),
        ({"task": "multiclass", "labels": ["a"], "onnx_output": "p"}, "at least two labels"),
        ({"task": "regression", "labels": ["a", "b"], "onnx_output": "p"}, "no labels"),
        ({"task": "binary", "labels": ["a", "b"], "threshold": 1.5, "onnx_output": "p"}, "less than 1"),
    ],
)
def test_outputs_must_match_the_task(outputs: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        Outputs.model_validate(outputs)


def _manifest(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "fraud",
        "version": "1",
        "framework": "sklearn",
        "sha256": "0" * 64,
        "features": [{"name": "x", "type": "float"}],
        "sample": [{"x": 1.0}],
        "outputs": {"task": "binary", "labels": ["no", "yes"], "onnx_output": "probabilities"},
        **overrides,
    }


def test_manifest_round_trips_through_json() -> None:
    manifest = ModelManifest.model_validate(_manifest(metrics={"auc": 0.9}, lineage={"code_version": "abc"}))
    again = ModelManifest.model_validate_json(manifest.dumps())
    assert again == manifest
    assert again.input_width == 1


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"name": "Fraud_Model"}, "should match pattern"),
        ({"sha256": "abc"}, "should match pattern"),
        ({"features": [{"name": "x", "type": "float"}, {"name": "x", "type": "int"}]}, "duplicate feature names: x"),
        ({"sample": []}, "at least 1 item"),
        ({"surprise": 1}, "Extra inputs are not permitted"),
        ({"framework": "caffe"}, "Input should be"),
    ],
)
def test_manifest_validation(override: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        ModelManifest.model_validate(_manifest(**override))


def test_a_matrix_model_encodes_its_text_features_and_a_columns_model_transforms_nothing() -> None:
    from sagegate.manifest import ModelManifest

    base = {
        "name": "m",
        "version": "1",
        "framework": "sklearn",
        "outputs": {"task": "regression", "onnx_output": "variable"},
        "sample": [{"c": "a"}],
        "sha256": "0" * 64,
    }
    plain = [{"name": "c", "type": "categorical", "categories": ["a"]}]
    with pytest.raises(ValueError, match="text features of a matrix model need one one_hot or ordinal"):
        ModelManifest.model_validate({**base, "features": plain})
    columns = ModelManifest.model_validate(
        {**base, "features": plain, "inputs": "columns", "input_types": {"c": "string"}}
    )
    assert columns.inputs == "columns"
    encoded = [{**plain[0], "transforms": [{"kind": "one_hot"}]}]
    with pytest.raises(ValueError, match="does its own preprocessing"):
        ModelManifest.model_validate({**base, "features": encoded, "inputs": "columns", "input_types": {"c": "string"}})
