"""The IAM checks themselves: calls become the requests the Service Authorization Reference says they
make, the evaluator follows IAM's rules, and every Task of every definition is allowed to its
state machine's role with the names it uses (statically, beside the executions that record calls)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sagegate.workflows.definitions import expand, integration, tasks
from tests.aws_rules.errors import botocore_service
from tests.aws_rules.iam import Call, Request, evaluate, requests_for
from tests.aws_rules.template import synthesized

ACCOUNT, REGION = "111111111111", "eu-west-1"


def _requests(service: str, operation: str, **params: Any) -> set[str]:
    return {str(r) for r in requests_for(Call("role", service, operation, params), account=ACCOUNT, region=REGION)}


def test_update_endpoint_needs_the_config_as_well_as_the_endpoint() -> None:
    found = _requests("sagemaker", "UpdateEndpoint", EndpointName="e", EndpointConfigName="c")
    assert found == {
        f"sagemaker:UpdateEndpoint on arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/e",
        f"sagemaker:UpdateEndpoint on arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/c",
    }


def test_creating_a_model_passes_its_role_and_tags_it() -> None:
    role = f"arn:aws:iam::{ACCOUNT}:role/r"
    calls = requests_for(
        Call("x", "sagemaker", "CreateModel", {"ModelName": "m", "ExecutionRoleArn": role, "Tags": [{"Key": "k"}]}),
        account=ACCOUNT,
        region=REGION,
    )
    assert {r.action for r in calls} == {"sagemaker:CreateModel", "iam:PassRole", "sagemaker:AddTags"}
    (passed,) = [r for r in calls if r.action == "iam:PassRole"]
    assert (passed.resource, dict(passed.context)) == (role, {"iam:PassedToService": "sagemaker.amazonaws.com"})


def test_registering_a_variant_for_autoscaling_needs_sagemaker_permissions_on_the_caller() -> None:
    call = Call(
        "x",
        "application-autoscaling",
        "RegisterScalableTarget",
        {"ServiceNamespace": "sagemaker", "ResourceId": "endpoint/e/variant/v2", "ScalableDimension": "d"},
        {"endpoint_config": "c"},
    )
    actions = {(r.action, r.resource.rsplit(":", 1)[-1]) for r in requests_for(call, account=ACCOUNT, region=REGION)}
    assert {
        ("sagemaker:DescribeEndpoint", "endpoint/e"),
        ("sagemaker:DescribeEndpointConfig", "endpoint-config/c"),
        ("sagemaker:UpdateEndpointWeightsAndCapacities", "endpoint/e"),
    } <= actions


def test_s3_calls_name_the_object_or_the_bucket_with_its_prefix() -> None:
    assert _requests("s3", "GetObject", Bucket="b", Key="models/m.json") == {
        "s3:GetObject on arn:aws:s3:::b/models/m.json"
    }
    (listing,) = requests_for(
        Call("x", "s3", "ListObjectsV2", {"Bucket": "b", "Prefix": "capture/"}), account=ACCOUNT, region=REGION
    )
    assert (listing.action, listing.resource, dict(listing.context)) == (
        "s3:ListBucket",
        "arn:aws:s3:::b",
        {"s3:prefix": "capture/"},
    )


def test_an_unknown_action_is_an_error_not_a_pass() -> None:
    with pytest.raises(KeyError, match="not an IAM action"):
        requests_for(Call("x", "sagemaker", "MadeUpOperation", {}), account=ACCOUNT, region=REGION)


ALLOW_CONFIGS = {
    "Effect": "Allow",
    "Action": ["sagemaker:Describe*"],
    "Resource": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/sagegate-dev-*",
}


@pytest.mark.parametrize(
    ("request_", "statements", "verdict"),
    [
        (
            Request(
                "sagemaker:DescribeEndpointConfig",
                f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/sagegate-dev-x",
            ),
            [ALLOW_CONFIGS],
            "allowed",
        ),
        (  # CloudFormation's own name: outside the prefix
            Request(
                "sagemaker:DescribeEndpointConfig",
                f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/ServingfraudConfig-AB12",
            ),
            [ALLOW_CONFIGS],
            "implicitly denied",
        ),
        (
            Request(
                "sagemaker:DescribeEndpointConfig",
                f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/sagegate-dev-x",
            ),
            [ALLOW_CONFIGS, {**ALLOW_CONFIGS, "Effect": "Deny"}],
            "denied",
        ),
        (
            Request("iam:PassRole", "arn:aws:iam::1:role/r", (("iam:PassedToService", "lambda.amazonaws.com"),)),
            [
                {
                    "Effect": "Allow",
                    "Action": "iam:PassRole",
                    "Resource": "arn:aws:iam::1:role/r",
                    "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
                }
            ],
            "implicitly denied",
        ),
        (
            Request("s3:ListBucket", "arn:aws:s3:::b", (("s3:prefix", "models/x"),)),
            [
                {
                    "Effect": "Allow",
                    "Action": "s3:ListBucket",
                    "Resource": "arn:aws:s3:::b",
                    "Condition": {"StringLike": {"s3:prefix": ["capture/*"]}},
                }
            ],
            "implicitly denied",
        ),
        (
            Request("s3:GetObject", "arn:aws:s3:::b/k"),
            [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
            "allowed",
        ),
    ],
)
def test_the_evaluator_follows_iams_rules(request_: Request, statements: list[dict[str, Any]], verdict: str) -> None:
    assert evaluate(request_, statements) == verdict


def _representative(parameters: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A task's Parameters with each JSONPath replaced by a value of the kind the workflows use there:
    the names the plans and jobs make, under the environment's prefix."""
    examples = {
        "EndpointName": f"{prefix}-fraud",
        "EndpointConfigName": f"{prefix}-fraud-v2-ramp-0a1b2c3d",
        "ModelName": f"{prefix}-fraud-v2-0a1b2c3d",
        "AlarmNames": [f"{prefix}-fraud-v2-errors"],
        "AlarmName": f"{prefix}-fraud-v2-errors",
        "ModelPackageName": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/fraud/2",
        "ModelPackageArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/fraud/2",
        "TransformJobName": "fraud-v2-0a1b2c3d4e5f",
        "TrainingJobName": "fraud-v2-0a1b2c3d4e5f",
        "Key": "manifests/fraud-v2-0a1b2c3d4e5f.json",
    }
    filled: dict[str, Any] = {}
    for key, value in parameters.items():
        name = key.removesuffix(".$")
        if key.endswith(".$"):
            if name in examples:
                filled[name] = examples[name]
        elif isinstance(value, dict):
            filled[name] = _representative(value, prefix)
        else:
            filled[name] = value
    return filled


@pytest.mark.parametrize("name", ["deploy_model", "batch_inference"])
def test_every_task_of_the_definition_is_allowed_to_its_role(name: str) -> None:
    deployed = synthesized("dev")
    machine = deployed.logical_id(
        "AWS::StepFunctions::StateMachine", StateMachineName=f"sagegate-dev-{name.replace('_', '-')}"
    )
    role = deployed.role_of(
        "AWS::StepFunctions::StateMachine", StateMachineName=f"sagegate-dev-{name.replace('_', '-')}"
    )
    statements = deployed.role_statements(role)
    definition = json.loads(deployed.definition(machine))
    denied = []
    for task_name, task in tasks(expand(definition)["States"]):
        kind = integration(task["Resource"])
        service = botocore_service(kind.split(":")[1]) if kind.startswith("aws-sdk:") else kind
        action = task["Resource"].rsplit(":", 1)[-1]
        operation = {"invoke": "Invoke"}.get(action, action[0].upper() + action[1:])
        params = _representative(task.get("Parameters", {}), "sagegate-dev")
        for request in requests_for(Call(role, service, operation, params), account=ACCOUNT, region=REGION):
            if evaluate(request, statements) != "allowed":
                denied.append(f"{task_name}: {request}")
    assert not denied, "\n".join(denied)
