"""Starting and following the deployment workflow, under moto's Step Functions (a Pass machine
stands in for deploy_model, which issue 6 adds; this proves the start/follow/idempotency side)."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from sagegate.deploy.aws import follow_rollout, rollout_input, start_rollout
from sagegate.registry import RegistryError


def test_rollout_input_per_strategy() -> None:
    assert rollout_input("fraud", "3", strategy="canary")["steps"] == [5, 20, 50, 100]
    assert rollout_input("fraud", "3", strategy="ab", traffic=20)["steps"] == [20]
    assert rollout_input("fraud", "3", strategy="shadow")["steps"] == []
    with pytest.raises(RegistryError, match="strategy must be one of"):
        rollout_input("fraud", "3", strategy="yolo")
    with pytest.raises(RegistryError, match="needs --traffic"):
        rollout_input("fraud", "3", strategy="ab")


def test_start_follow_and_no_second_rollout_for_the_same_version() -> None:
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        iam = boto3.client("iam", region_name="eu-west-1")
        role = iam.create_role(
            RoleName="sfn", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []})
        )["Role"]["Arn"]
        sfn = boto3.client("stepfunctions", region_name="eu-west-1")
        definition = {
            "StartAt": "Smoke",
            "States": {"Smoke": {"Type": "Pass", "Next": "Ramp"}, "Ramp": {"Type": "Pass", "End": True}},
        }
        machine = sfn.create_state_machine(name="deploy_model", definition=json.dumps(definition), roleArn=role)[
            "stateMachineArn"
        ]
        payload = rollout_input("fraud", "3", strategy="canary")
        arn = start_rollout(sfn, machine, payload)
        assert json.loads(sfn.describe_execution(executionArn=arn)["input"]) == payload
        steps: list[str] = []
        assert follow_rollout(sfn, arn, on_step=steps.append, poll=0.05, timeout=30) == "SUCCEEDED"
        with pytest.raises(RegistryError, match="already exists"):
            start_rollout(sfn, machine, payload)
        assert payload["trigger"] == "manual"  # a person asked: a rolled-back version may go again


def test_a_failed_rollout_can_be_started_again_under_a_new_name() -> None:
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        iam = boto3.client("iam", region_name="eu-west-1")
        role = iam.create_role(
            RoleName="sfn", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []})
        )["Role"]["Arn"]
        sfn = boto3.client("stepfunctions", region_name="eu-west-1")
        definition = {"StartAt": "RolledBack", "States": {"RolledBack": {"Type": "Fail", "Error": "AlarmBreached"}}}
        machine = sfn.create_state_machine(name="deploy_model", definition=json.dumps(definition), roleArn=role)[
            "stateMachineArn"
        ]
        payload = rollout_input("fraud", "3", strategy="canary")
        first = start_rollout(sfn, machine, payload)
        assert follow_rollout(sfn, first, on_step=lambda _: None, poll=0.05, timeout=30) == "FAILED"
        second = start_rollout(sfn, machine, payload)
        assert second.endswith(":deploy-fraud-v3-canary-2")
