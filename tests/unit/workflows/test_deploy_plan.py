"""The deployment workflow's logic (sagegate.workflows.deploy) and the shape of its state machine."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sagegate.routing import Route
from sagegate.workflows.deploy import DeploymentRefused, SmokeTestFailed, check_smoke, plan

SAMPLE = [{"amount": 1.0}, {"amount": 2.0}, {"amount": 3.0}]


def state(strategy: str = "canary", variants: dict[str, float] | None = None, **extra: Any) -> dict[str, Any]:
    variants = variants or {"v1": 1.0}
    return {
        "input": {"model": "fraud", "version": "4", "strategy": strategy, "poll_seconds": 30, **extra},
        "package": {"arn": "arn:pkg/fraud/4", "metadata": {"manifest_uri": "s3://b/m.json"}},
        "current": {
            "EndpointName": "sg-fraud",
            "EndpointConfigName": "sg-fraud-cfg",
            "ProductionVariants": [
                {"VariantName": n, "CurrentWeight": w, "CurrentInstanceCount": 3} for n, w in variants.items()
            ],
        },
        "current_config": {
            "EndpointConfigName": "sg-fraud-cfg",
            "ProductionVariants": [
                {"VariantName": n, "ModelName": f"m-{n}", "InstanceType": "ml.c6i.xlarge", "InitialInstanceCount": 1}
                for n in variants
            ],
        },
        "route": {},
    }


def planned(s: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = plan(s, execution="exec-1", manifest_reader=lambda uri: {"sample": SAMPLE})["plan"]
    return result


def test_linear_steps_split_the_rest_in_proportion_and_bake_in_poll_sized_checks() -> None:
    p = planned(state("linear", {"v1": 3.0, "v2": 1.0}, bake_seconds=95))
    assert [s["percent"] for s in p["steps"]] == [25, 50, 75, 100]
    first = {w["VariantName"]: w["DesiredWeight"] for w in p["steps"][0]["weights"]}
    assert first == {"v1": 56.25, "v2": 18.75, "v4": 25}
    assert {s["checks"] for s in p["steps"]} == {4}  # ceil(95 / 30)
    assert Route.model_validate_json(p["steps"][0]["route"]).variant("v4").weight == 25
    # The current variants keep the instance counts autoscaling gave them; the new one copies the main one.
    counts = {v["VariantName"]: v["InitialInstanceCount"] for v in p["config"]["ProductionVariants"]}
    assert counts == {"v1": 3, "v2": 3, "v4": 3}
    assert p["rollback_weights"] == [
        {"VariantName": "v1", "DesiredWeight": 75.0},
        {"VariantName": "v2", "DesiredWeight": 25.0},
        {"VariantName": "v4", "DesiredWeight": 0.0},
    ]
    assert json.loads(p["smoke"]["body"]) == {"instances": SAMPLE} and p["smoke"]["records"] == 3


def test_replace_turns_even_steps_into_sagemaker_linear_shifting() -> None:
    p = planned(state("replace", steps=[25, 50, 75, 100], bake_seconds=120, retention_seconds=7200))
    policy = p["deployment_config"]["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"] == {
        "Type": "LINEAR",
        "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 25},
        "WaitIntervalInSeconds": 120,
    }
    assert policy["TerminationWaitInSeconds"] == 3600  # SageMaker's bound
    with pytest.raises(DeploymentRefused, match="evenly spaced"):
        planned(state("replace", steps=[10, 50, 100]))


@pytest.mark.parametrize(
    ("s", "message"),
    [
        (state(variants={"v1": 1.0, "v4": 1.0}), "already serves v4"),
        (state("replace", {"v1": 1.0, "v2": 1.0}), "single-variant endpoint"),
        (state(steps=[5, 50]), "ends at 100"),
        (state(bake_seconds=-1), "input bake_seconds"),
    ],
)
def test_plans_that_cannot_work_are_refused_before_anything_changes(s: dict[str, Any], message: str) -> None:
    with pytest.raises(DeploymentRefused, match=message):
        planned(s)


def test_quality_alarm_only_when_a_confidence_floor_is_set() -> None:
    assert [a["AlarmName"] for a in planned(state())["alarms"]] == ["sg-fraud-v4-errors", "sg-fraud-v4-latency"]
    with_quality = planned(state(alarms={"min_mean_confidence": 0.7}))["alarms"]
    quality = with_quality[-1]
    assert quality["AlarmName"] == "sg-fraud-v4-quality"
    assert (quality["ComparisonOperator"], quality["Threshold"]) == ("LessThanThreshold", 0.7)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not json", "not JSON"),
        ('{"predictions": [{"prediction": 1}]}', "1 predictions for 2 records"),
        ('{"predictions": [{"label": "a"}, {"prediction": 1}]}', "prediction 0 has no 'prediction'"),
        ('{"predictions": [{"prediction": 1, "confidence": 1.5}, {"prediction": 1}]}', "outside"),
    ],
)
def test_the_smoke_test_refuses_answers_of_the_wrong_shape(body: str, message: str) -> None:
    with pytest.raises(SmokeTestFailed, match=message):
        check_smoke({"plan": {"smoke": {"records": 2}}, "smoke": {"Body": body}})


def test_the_version_may_come_as_a_number_from_eventbridge() -> None:
    s = state()
    s["input"]["version"] = 4
    p = plan(s, execution="e", manifest_reader=lambda uri: {"sample": SAMPLE})
    assert p["input"]["version"] == "4" and p["plan"]["variant"] == "v4"
