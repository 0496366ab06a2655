"""The input a registry event gives the deployment workflow, through the synthesized EventBridge
rule (its pattern and InputTransformer applied to the event as SageMaker documents it): the workflow
must accept it, and it must carry the environment's own rollout policy and alarm thresholds."""

from __future__ import annotations

import json

import pytest

from infra.config import CONTEXT_KEY, load_environments
from sagegate.workflows.deploy import DeployRequest
from tests.aws_rules.events import rule_input, rules_matching, state_change_event
from tests.aws_rules.template import ROOT, synthesized

ENVIRONMENTS = load_environments(json.loads((ROOT / "cdk.json").read_text())["context"][CONTEXT_KEY])


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_an_approval_starts_the_rollout_with_the_environments_policy_and_thresholds(env: str) -> None:
    deployed = synthesized(env)
    config = ENVIRONMENTS[env]
    request = DeployRequest.model_validate(rule_input(deployed, "fraud", 7, "Approved"))
    assert (request.model, request.version, request.trigger, request.approval) == ("fraud", "7", "approval", "Approved")
    assert (request.strategy, request.steps, request.bake_seconds) == (
        config.rollout.strategy,
        config.rollout.steps,
        config.rollout.bake_seconds,
    )
    assert request.alarms == config.alarms  # prod: 0.5% errors, p99 150 ms, 100 requests (cdk.json)


def test_prod_thresholds_are_not_the_defaults() -> None:
    """What the test above would have caught: the rule carried the default thresholds in prod."""
    request = DeployRequest.model_validate(rule_input(synthesized("prod"), "fraud", 7, "Approved"))
    assert (request.alarms.max_error_rate, request.alarms.max_p99_latency_ms, request.alarms.min_requests) == (
        0.005,
        150,
        100,
    )


def test_a_rejection_reaches_the_workflow_and_other_models_do_not() -> None:
    deployed = synthesized("dev")
    assert DeployRequest.model_validate(rule_input(deployed, "fraud", 3, "Rejected")).approval == "Rejected"
    assert not rules_matching(deployed, state_change_event(deployed, "churn", 1, "Approved"))
    assert not rules_matching(deployed, state_change_event(deployed, "fraud", 1, "PendingManualApproval"))


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_each_models_approval_carries_how_its_first_version_is_served(env: str) -> None:
    """The first approved version creates the endpoint: its rule's input must say what cdk.json says
    of that model (an approval of prod's images must not create a CPU endpoint for it)."""
    deployed = synthesized(env)
    for model in ENVIRONMENTS[env].models:
        first = DeployRequest.model_validate(rule_input(deployed, model.name, 1, "Approved")).first
        assert first is not None
        assert (first.instance_type, first.instance_count, first.gpus) == (
            model.instance_type,
            model.instance_count,
            model.gpus,
        )
        assert first.autoscaling.model_dump() == model.autoscaling.model_dump()
        assert first.capture_percent == model.data_capture_percent
