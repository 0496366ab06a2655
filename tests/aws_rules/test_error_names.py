"""Every ErrorEquals in stepfunctions/ names an error the state can see: a States.* name, an error
that the task's service models in botocore (named as Step Functions names it), the service-level name
of its unmodeled errors, or a Fail state's / our Lambda's own error. moto accepts any name, so a retry
that never matches passes every execution test; this reads the rule from the service models instead."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sagegate.workflows.definitions import DEFINITIONS, TRANSIENT_ERRORS, expand, tasks
from tests.aws_rules.errors import STATES_ERRORS, allowed, task_errors

NAMES = sorted(p.name.removesuffix(".asl.json") for p in DEFINITIONS.glob("*.asl.json"))


def _states(states: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, state in states.items():
        found.append((f"{path}{name}", state))
        for inner in (state.get("ItemProcessor"), state.get("Iterator"), *state.get("Branches", [])):
            if inner:
                found.extend(_states(inner["States"], f"{path}{name}/"))
    return found


def _handlers() -> list[tuple[str, str, str]]:
    found = []
    for name in NAMES:
        definition = expand(json.loads((DEFINITIONS / f"{name}.asl.json").read_text()))
        for path, state in _states(definition["States"]):
            for kind in ("Retry", "Catch"):
                for handler in state.get(kind, []):
                    for error in handler["ErrorEquals"]:
                        found.append((name, f"{path} {kind}", error))
    return found


@pytest.mark.parametrize(("definition", "where", "error"), _handlers())
def test_every_error_name_can_happen(definition: str, where: str, error: str) -> None:
    state_path = where.split(" ", maxsplit=1)[0].split("/")
    states = expand(json.loads((DEFINITIONS / f"{definition}.asl.json").read_text()))["States"]
    state: dict[str, Any] = {}
    for part in state_path:
        state = states[part]
        inner = state.get("ItemProcessor") or state.get("Iterator")
        states = inner["States"] if inner else {}
    assert error in allowed(state), f"{definition}: {where} names {error}, which that state never raises"


def test_every_task_retries_its_transient_errors() -> None:
    """No AWS call is left to fail a rollout on a throttle: every Task has a retrier of real names."""
    for name in NAMES:
        definition = expand(json.loads((DEFINITIONS / f"{name}.asl.json").read_text()))
        for task_name, task in tasks(definition["States"]):
            retried = {e for r in task.get("Retry", []) for e in r["ErrorEquals"]}
            assert retried, f"{name}: {task_name} has no retrier"
            assert retried <= task_errors(task["Resource"]) | STATES_ERRORS, f"{name}: {task_name}"


@pytest.mark.parametrize("integration", sorted(TRANSIENT_ERRORS))
def test_the_transient_lists_name_real_errors(integration: str) -> None:
    resource = f"arn:aws:states:::{integration}:anyAction"
    assert set(TRANSIENT_ERRORS[integration]) <= task_errors(resource)


def test_the_rule_refuses_the_names_the_workflows_used_to_retry() -> None:
    """What these tests would have caught: none of SageMaker, its runtime or CloudWatch models a
    ThrottlingException, so Step Functions never raises those names."""
    for resource, name in (
        ("arn:aws:states:::aws-sdk:sagemaker:updateEndpoint", "SageMaker.ThrottlingException"),
        ("arn:aws:states:::aws-sdk:sagemakerruntime:invokeEndpoint", "SageMakerRuntime.ThrottlingException"),
        ("arn:aws:states:::aws-sdk:cloudwatch:describeAlarms", "CloudWatch.ThrottlingException"),
        ("arn:aws:states:::sns:publish", "Lambda.ServiceException"),
    ):
        assert name not in task_errors(resource)
    assert "SageMaker.ResourceNotFoundException" in task_errors("arn:aws:states:::aws-sdk:sagemaker:describeEndpoint")
    assert "DynamoDB.ConditionalCheckFailedException" in task_errors("arn:aws:states:::dynamodb:putItem")


def test_loops_that_poll_a_job_notify_when_they_fail() -> None:
    """A Describe in a wait loop that exhausts its retries must reach the failure notification, not end
    the execution silently."""
    definition = json.loads((DEFINITIONS / "batch_inference.asl.json").read_text())
    for name, task in tasks(definition["States"]):
        assert any("States.ALL" in c["ErrorEquals"] for c in task.get("Catch", [])) or task["Resource"].endswith(
            ":publish"
        ), f"batch_inference: {name} has no Catch"
