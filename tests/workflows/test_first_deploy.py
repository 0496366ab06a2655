"""A first deploy with no manual step: dev as cdk.json makes it (fraud configured by how it is
served, no package pinned), then `sagegate register` and an approval. The approval's event, through
the synthesized rule's input, starts stepfunctions/deploy_model.asl.json, which finds no endpoint and
creates it with the first version. Executed by moto's Step Functions in an account built from the
template (tests/workflows/conftest.py says what the stand-ins cannot prove; moto's endpoints are
InService at once, so the wait for Creating is walked through once, not for minutes). Every call is
checked against the role that made it and against botocore's model of the request."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from infra.config import CONTEXT_KEY, load_environments
from sagegate.workflows.deploy import alarm_name
from tests.aws_rules.account import ENDPOINT_RESOURCE, custom_resource
from tests.aws_rules.events import rule_input
from tests.aws_rules.template import ROOT
from tests.workflows.conftest import finished, notifications, run_execution
from tests.workflows.test_deploy_model import (
    ENDPOINT,
    GOOD_ANSWER,
    calls,
    config_names,
    live_variants,
    model_names,
    package_metadata,
    queue_answers,
    register,
    scaling,
    stored_route,
)

DEV = load_environments(json.loads((ROOT / "cdk.json").read_text())["context"][CONTEXT_KEY])["dev"]
(FRAUD,) = [m for m in DEV.models if m.name == "fraud"]


@pytest.fixture
def fresh(first_world: SimpleNamespace) -> SimpleNamespace:
    """The account right after the first `cdk deploy`: the model's group, nothing registered."""
    with first_world.recorder.off():
        first_world.sm.create_model_package_group(ModelPackageGroupName="fraud")
    return first_world


def approved(env: SimpleNamespace, version: int, name: str) -> dict[str, Any]:
    """The approval of `version` as the synthesized rule hands it to the workflow, run to its end."""
    no_waits = {"poll_seconds": 0, "bake_seconds": 0, "retention_seconds": 0}
    payload = {**rule_input(env.deployed, "fraud", version, "Approved"), **no_waits}
    return run_execution(env, env.deploy_machine, name, payload)


def endpoints(env: SimpleNamespace) -> set[str]:
    with env.recorder.off():
        return {e["EndpointName"] for e in env.sm.list_endpoints()["Endpoints"]}


def route_item(env: SimpleNamespace) -> dict[str, Any] | None:
    with env.recorder.off():
        item = env.ddb.get_item(TableName=env.route_table, Key={"model": {"S": "fraud"}, "kind": {"S": "route"}})
    return item.get("Item")


def test_the_deploy_makes_no_endpoint_before_a_version_is_approved(fresh: SimpleNamespace) -> None:
    (logical,) = fresh.deployed.of_type(ENDPOINT_RESOURCE)
    assert "FirstRollout" in fresh.deployed.properties(logical)  # how the model is served first
    assert ENDPOINT not in endpoints(fresh)
    assert route_item(fresh) is None
    with fresh.recorder.off():
        assert fresh.sfn.list_executions(stateMachineArn=fresh.machines[fresh.deploy_machine])["executions"] == []


def test_the_first_approved_version_creates_the_endpoint_and_takes_the_traffic(fresh: SimpleNamespace) -> None:
    register(fresh, "1", approved=True)
    queue_answers(fresh, GOOD_ANSWER)
    result = approved(fresh, 1, "first-ok")
    assert result["status"] == "SUCCEEDED", result
    assert "CreateEndpoint" in result["states"]

    # as cdk.json says: its instance type and count, data capture to the capture bucket, under KMS
    (config,) = calls(fresh, "sagemaker:CreateEndpointConfig")
    (variant,) = config["ProductionVariants"]
    assert (variant["VariantName"], variant["InstanceType"], variant["InitialInstanceCount"]) == (
        "v1",
        FRAUD.instance_type,
        FRAUD.instance_count,
    )
    key = fresh.deployed.get_att("DataKey5F086070", "Arn")
    assert config["KmsKeyId"] == key
    capture = config["DataCaptureConfig"]
    assert (capture["EnableCapture"], capture["InitialSamplingPercentage"]) == (True, FRAUD.data_capture_percent)
    assert capture["KmsKeyId"] == key and capture["DestinationS3Uri"].endswith("/capture")
    (model,) = calls(fresh, "sagemaker:CreateModel")
    assert model["PrimaryContainer"]["ModelPackageName"].endswith("model-package/fraud/1")
    assert model["EnableNetworkIsolation"] is True

    # smoke-tested before the route sends it anything; then the route, scaling and alarms
    (smoke,) = calls(fresh, "sagemaker-runtime:InvokeEndpoint")
    assert (smoke["EndpointName"], smoke["TargetVariant"]) == (ENDPOINT, "v1")
    assert live_variants(fresh) == {"v1": 1.0}
    assert [(v.name, v.model_version, v.weight) for v in stored_route(fresh).variants] == [("v1", "1", 100.0)]
    bounds = FRAUD.autoscaling
    assert scaling(fresh) == {
        "v1": {
            "capacity": (bounds.min_instances, bounds.max_instances),
            "policies": {"invocations-per-instance": float(bounds.invocations_per_instance)},
        }
    }
    with fresh.recorder.off():
        alarms = {a["AlarmName"] for a in fresh.cloudwatch.describe_alarms(AlarmNamePrefix=ENDPOINT)["MetricAlarms"]}
    assert {alarm_name(ENDPOINT, "v1", k) for k in ("errors", "latency")} <= alarms
    assert package_metadata(fresh, "1")["rollout"] == "live"
    assert any("is live" in m for m in notifications(fresh))


def test_the_next_approval_rolls_out_over_the_first_as_the_policy_says(fresh: SimpleNamespace) -> None:
    register(fresh, "1", approved=True)
    queue_answers(fresh, GOOD_ANSWER, GOOD_ANSWER)
    assert approved(fresh, 1, "first")["status"] == "SUCCEEDED"
    register(fresh, "2", approved=True)
    result = approved(fresh, 2, "second")
    assert result["status"] == "SUCCEEDED", result
    assert result["states"].count("CreateEndpoint") == 0  # this execution updated the endpoint
    assert DEV.rollout.strategy == "canary"
    weights = [
        {w["VariantName"]: w["DesiredWeight"] for w in c["DesiredWeightsAndCapacities"]}
        for c in calls(fresh, "sagemaker:UpdateEndpointWeightsAndCapacities")
    ]
    assert [w["v2"] for w in weights] == DEV.rollout.steps
    assert set(live_variants(fresh)) == {"v2"}
    # v2 scales as the first version did
    bounds = FRAUD.autoscaling
    assert scaling(fresh)["v2"]["capacity"] == (bounds.min_instances, bounds.max_instances)


def test_a_first_version_that_fails_its_smoke_test_leaves_nothing_behind(fresh: SimpleNamespace) -> None:
    register(fresh, "1", approved=True)
    queue_answers(fresh, json.dumps({"predictions": [{"prediction": 0.1}]}))  # one answer for two records
    result = approved(fresh, 1, "first-bad")
    assert result["status"] == "FAILED", result
    assert "DeleteFirstEndpoint" in result["states"]
    assert "RestoreRoute" not in result["states"]  # there was no route to go back to
    assert ENDPOINT not in endpoints(fresh)
    assert route_item(fresh) is None  # the gateway never sent it traffic
    assert not [c for c in config_names(fresh) if c.startswith(ENDPOINT)]
    assert not [m for m in model_names(fresh) if m.startswith(ENDPOINT)]
    with fresh.recorder.off():
        assert fresh.cloudwatch.describe_alarms(AlarmNamePrefix=ENDPOINT)["MetricAlarms"] == []
    assert package_metadata(fresh, "1")["rollout"] == "rolled_back"
    assert any("rolled back" in m for m in notifications(fresh))


def test_a_version_approved_before_the_stack_goes_live_at_its_first_deploy(fresh: SimpleNamespace) -> None:
    """`sagegate register` and the approval came first (no rule existed to hear the event): the
    endpoint's Create starts the workflow for the latest approved version itself."""
    register(fresh, "1", approved=True)
    register(fresh, "2", approved=False)  # not approved: not the one to serve
    queue_answers(fresh, GOOD_ANSWER)
    (logical,) = fresh.deployed.of_type(ENDPOINT_RESOURCE)
    fresh.machine_role = fresh.deploy_role
    answer = custom_resource(fresh.deployed, fresh.recorder, logical, "Create")
    started = answer["Data"]["Started"]
    assert started
    arn = fresh.machines[fresh.deploy_machine].replace(":stateMachine:", ":execution:") + f":{started}"
    result = finished(fresh, arn)
    assert result["status"] == "SUCCEEDED", result
    assert [(v.name, v.model_version) for v in stored_route(fresh).variants] == [("v1", "1")]
    # CloudFormation asking again finds the endpoint: adopted, nothing started twice
    again = custom_resource(fresh.deployed, fresh.recorder, logical, "Create")
    assert again["Data"]["Created"] == "false" and "Started" not in again["Data"]
    with fresh.recorder.off():
        executions = fresh.sfn.list_executions(stateMachineArn=fresh.machines[fresh.deploy_machine])["executions"]
    assert len(executions) == 1


def test_a_later_cdk_deploy_and_a_stack_delete_after_the_first_version(fresh: SimpleNamespace) -> None:
    """The endpoint the workflow made is the stack's to take down (removal "destroy"), and a deploy
    in between changes nothing that serves."""
    register(fresh, "1", approved=True)
    queue_answers(fresh, GOOD_ANSWER)
    assert approved(fresh, 1, "first")["status"] == "SUCCEEDED"
    (logical,) = fresh.deployed.of_type(ENDPOINT_RESOURCE)
    properties = fresh.deployed.properties(logical)
    before = (live_variants(fresh), scaling(fresh), config_names(fresh))
    update = custom_resource(
        fresh.deployed, fresh.recorder, logical, "Update", properties=properties, old_properties=properties
    )
    assert update["Data"]["Created"] == "false"
    assert (live_variants(fresh), scaling(fresh), config_names(fresh)) == before

    custom_resource(fresh.deployed, fresh.recorder, logical, "Delete")
    assert ENDPOINT not in endpoints(fresh)
    assert not [c for c in config_names(fresh) if c.startswith(ENDPOINT)]
    assert not [m for m in model_names(fresh) if m.startswith(ENDPOINT)]
    assert scaling(fresh) == {}
