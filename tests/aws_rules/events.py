"""A registry event as SageMaker sends it, through the synthesized EventBridge rule: the rule's event
pattern decides whether it starts the workflow, and its InputTransformer what the workflow gets.

The event's shape is the documented one ("Events that Amazon SageMaker sends to Amazon EventBridge",
SageMaker model package state change): source aws.sagemaker, detail-type "SageMaker Model Package
State Change", the package's description in `detail` with the version as a number. SageMaker sends
it on every change of the package, an update of its metadata by the workflow included.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.aws_rules.template import Deployed

__all__ = ["matches", "rule_input", "state_change_event"]


def state_change_event(deployed: Deployed, group: str, version: int, status: str) -> dict[str, Any]:
    arn = deployed.arn("sagemaker", f"model-package/{group}/{version}")
    return {
        "version": "0",
        "id": "5f7b9c1e-0000-4000-8000-000000000000",
        "detail-type": "SageMaker Model Package State Change",
        "source": "aws.sagemaker",
        "account": deployed.account,
        "time": "2026-12-01T10:00:00Z",
        "region": deployed.region,
        "resources": [arn],
        "detail": {
            "ModelPackageGroupName": group,
            "ModelPackageVersion": version,
            "ModelPackageArn": arn,
            "ModelPackageName": group,
            "CreationTime": 1764583200000,
            "ModelApprovalStatus": status,
            "ModelPackageStatus": "Completed",
            "LastModifiedTime": 1764583260000,
        },
    }


def matches(pattern: Any, event: Any) -> bool:
    """EventBridge's matching for the plain forms the stacks use: lists of values, nested objects."""
    if isinstance(pattern, dict):
        return isinstance(event, dict) and all(k in event and matches(v, event[k]) for k, v in pattern.items())
    if isinstance(pattern, list):
        values = event if isinstance(event, list) else [event]
        return any(v in pattern for v in values)
    return bool(pattern == event)


def _at(event: dict[str, Any], path: str) -> Any:
    """An InputPathsMap path ($.detail.ModelPackageVersion) in the event."""
    value: Any = event
    for part in path.removeprefix("$.").split("."):
        value = value[part]
    return value


def rules_matching(deployed: Deployed, event: dict[str, Any]) -> list[dict[str, Any]]:
    """The properties of the stack's EventBridge rules whose pattern matches `event`."""
    rules = [deployed.properties(logical) for logical in deployed.of_type("AWS::Events::Rule")]
    return [rule for rule in rules if matches(deployed.resolve(rule["EventPattern"]), event)]


def rule_input(deployed: Deployed, group: str, version: int, status: str) -> dict[str, Any]:
    """What the workflow receives for this event; an AssertionError unless one rule matches it."""
    event = state_change_event(deployed, group, version, status)
    found_rules = rules_matching(deployed, event)
    assert found_rules, f"no rule starts a rollout of {group} for {status}"
    (rule,) = found_rules
    (target,) = rule["Targets"]
    transformer = target["InputTransformer"]
    values = {name: _at(event, path) for name, path in transformer.get("InputPathsMap", {}).items()}
    text = re.sub(r"<([A-Za-z0-9_.-]+)>", lambda m: json.dumps(values[m[1]]), transformer["InputTemplate"])
    found: dict[str, Any] = json.loads(text)
    return found
