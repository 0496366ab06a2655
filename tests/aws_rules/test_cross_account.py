"""IAM's cross-account rule, and the roles of environments whose registry is in another account
(tests/multi_account.py): each call a reader makes on the registry is allowed by its identity
policy (the environment's template) AND by the resource policy of the registry's resource (the
registry's template), and by neither alone.

What this cannot prove: SCPs, permission boundaries, and how SageMaker itself authorizes CreateModel
from another account's package (its guide's group policy is followed)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sagegate.workflows.definitions import expand, integration, tasks
from tests.aws_rules.errors import botocore_service
from tests.aws_rules.iam import Call, Request, evaluate, requests_for
from tests.aws_rules.template import Deployed, synthesized
from tests.multi_account import CROSS_ACCOUNT, REGISTRY_ACCOUNT

REGION = "eu-west-1"
ENV_ACCOUNT = "222222222222"
ROLE = f"arn:aws:iam::{ENV_ACCOUNT}:role/sagegate-staging-sagemaker"
OBJECT = "arn:aws:s3:::registry-bucket/models/fraud/1/model.tar.gz"
READ = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::registry-bucket/models/*"}


def _granted(principal: Any, **condition: Any) -> dict[str, Any]:
    return {**READ, "Principal": principal, **({"Condition": condition} if condition else {})}


@pytest.mark.parametrize(
    ("identity", "resource", "verdict"),
    [
        ([READ], [_granted({"AWS": f"arn:aws:iam::{ENV_ACCOUNT}:root"})], "allowed"),
        ([READ], [_granted({"AWS": ROLE})], "allowed"),
        ([READ], [], "implicitly denied"),  # the identity side alone
        ([], [_granted({"AWS": ROLE})], "implicitly denied"),  # the resource side alone
        ([READ], [_granted({"AWS": "arn:aws:iam::999999999999:root"})], "implicitly denied"),  # another account
        (  # the environment's account, but a role the condition does not name
            [READ],
            [
                _granted(
                    {"AWS": f"arn:aws:iam::{ENV_ACCOUNT}:root"},
                    ArnEquals={"aws:PrincipalArn": [f"arn:aws:iam::{ENV_ACCOUNT}:role/other"]},
                )
            ],
            "implicitly denied",
        ),
        ([READ], [_granted({"Service": "sagemaker.amazonaws.com"})], "implicitly denied"),
        ([READ], [{**_granted({"AWS": "*"}), "Effect": "Deny"}, _granted({"AWS": ROLE})], "denied"),
    ],
)
def test_across_accounts_both_the_identity_and_the_resource_policy_must_allow(
    identity: list[dict[str, Any]], resource: list[dict[str, Any]], verdict: str
) -> None:
    request = Request("s3:GetObject", OBJECT)
    assert evaluate(request, identity, resource, principal=ROLE, owner=REGISTRY_ACCOUNT) == verdict


def test_in_one_account_the_identity_policy_suffices_as_before() -> None:
    request = Request("s3:GetObject", OBJECT)
    assert evaluate(request, [READ], [], principal=ROLE, owner=ENV_ACCOUNT) == "allowed"
    assert evaluate(request, [READ]) == "allowed"
    # A resource ARN that names its account is owned by it: no owner needed.
    package = Request(
        "sagemaker:DescribeModelPackage", f"arn:aws:sagemaker:{REGION}:{REGISTRY_ACCOUNT}:model-package/f/1"
    )
    allow = {"Effect": "Allow", "Action": "sagemaker:DescribeModelPackage", "Resource": "*"}
    assert evaluate(package, [allow], [], principal=ROLE) == "implicitly denied"
    assert evaluate(package, [allow], [], principal=f"arn:aws:iam::{REGISTRY_ACCOUNT}:role/r") == "allowed"


# -- the synthesized stacks -------------------------------------------------------------------------------


def _registry() -> Deployed:
    return synthesized("registry", multi_account=True)


def _calls(registry: Deployed, reader: str) -> list[tuple[Request, str]]:
    """What a reader does in the registry (request, owner account), as the workflows and the gateway do it."""
    bucket = registry.name(
        registry.logical_id("AWS::S3::Bucket", BucketName=f"sagegate-registry-{REGISTRY_ACCOUNT}-{REGION}")
    )
    (key,) = registry.of_type("AWS::KMS::Key")
    package = f"arn:aws:sagemaker:{REGION}:{REGISTRY_ACCOUNT}:model-package/fraud/1"
    found: list[Call] = []
    extra: list[Request] = []
    if reader in ("sagemaker", "gateway", "deploy-logic", "monitor"):
        found.append(Call(reader, "s3", "GetObject", {"Bucket": bucket, "Key": "models/fraud/1/model.tar.gz"}))
        via_s3 = (("kms:ViaService", f"s3.{REGION}.amazonaws.com"),)
        extra.append(Request("kms:Decrypt", registry.get_att(key, "Arn"), via_s3, "S3 decrypts the object's key"))
    if reader == "sagemaker":
        for name in ("inference", "batch"):
            found.append(Call(reader, "ecr", "BatchGetImage", {"repositoryName": f"sagegate-registry-{name}"}))
            found.append(Call(reader, "ecr", "GetDownloadUrlForLayer", {"repositoryName": f"sagegate-registry-{name}"}))
    if reader in ("gateway", "deploy", "batch", "endpoint-owner", "monitor"):
        found.append(Call(reader, "sagemaker", "DescribeModelPackage", {"ModelPackageName": package}))
    requests = [r for c in found for r in requests_for(c, account=REGISTRY_ACCOUNT, region=REGION)] + extra
    return [(r, REGISTRY_ACCOUNT) for r in requests]


READERS = ["sagemaker", "gateway", "deploy-logic", "deploy", "batch", "endpoint-owner", "monitor"]


def test_every_reader_the_registry_names_is_checked_here() -> None:
    from infra.constructs.registry import READERS as NAMED

    assert sorted(READERS) == sorted(r.name for r in NAMED)


@pytest.mark.parametrize("env", CROSS_ACCOUNT)
@pytest.mark.parametrize("reader", READERS)
def test_each_reader_of_the_registry_is_allowed_by_both_sides_and_by_neither_alone(env: str, reader: str) -> None:
    deployed, registry = synthesized(env, multi_account=True), _registry()
    role = deployed.role_named(f"sagegate-{env}-{reader}")
    principal = deployed.role_arn(role)
    identity, resource = deployed.role_statements(role), registry.resource_statements()
    calls = _calls(registry, reader)
    assert calls
    for request, owner in calls:
        assert evaluate(request, identity, resource, principal=principal, owner=owner) == "allowed", request
        assert evaluate(request, identity, [], principal=principal, owner=owner) != "allowed", request
        assert evaluate(request, [], resource, principal=principal, owner=owner) != "allowed", request
        # Another role of the same environment, allowed everything by its own policy: the registry refuses it.
        everything = [{"Effect": "Allow", "Action": "*", "Resource": "*"}]
        stranger = f"arn:aws:iam::{deployed.account}:role/sagegate-{env}-other"
        assert evaluate(request, everything, resource, principal=stranger, owner=owner) != "allowed", request


@pytest.mark.parametrize("env", CROSS_ACCOUNT)
def test_no_write_to_the_registry_is_allowed_from_an_environment(env: str) -> None:
    deployed, registry = synthesized(env, multi_account=True), _registry()
    bucket = f"sagegate-registry-{REGISTRY_ACCOUNT}-{REGION}"
    writes = [
        Call("x", "s3", "PutObject", {"Bucket": bucket, "Key": "models/fraud/9/model.tar.gz"}),
        Call("x", "s3", "DeleteObject", {"Bucket": bucket, "Key": "models/fraud/1/model.tar.gz"}),
        Call(
            "x",
            "sagemaker",
            "UpdateModelPackage",
            {"ModelPackageArn": f"arn:aws:sagemaker:{REGION}:{REGISTRY_ACCOUNT}:model-package/fraud/1"},
        ),
        Call(
            "x",
            "sagemaker",
            "DeleteModelPackage",
            {"ModelPackageName": f"arn:aws:sagemaker:{REGION}:{REGISTRY_ACCOUNT}:model-package/fraud/1"},
        ),
        Call("x", "ecr", "PutImage", {"repositoryName": "sagegate-registry-inference"}),
    ]
    everything = [{"Effect": "Allow", "Action": "*", "Resource": "*"}]
    for reader in READERS:
        principal = deployed.role_arn(deployed.role_named(f"sagegate-{env}-{reader}"))
        for call in writes:
            for request in requests_for(call, account=REGISTRY_ACCOUNT, region=REGION):
                verdict = evaluate(
                    request, everything, registry.resource_statements(), principal=principal, owner=REGISTRY_ACCOUNT
                )
                assert verdict != "allowed", f"{reader}: {request}"


def _representative(parameters: dict[str, Any], prefix: str, account: str) -> dict[str, Any]:
    examples = {
        "EndpointName": f"{prefix}-fraud",
        "EndpointConfigName": f"{prefix}-fraud-v2-ramp-0a1b2c3d",
        "ModelName": f"{prefix}-fraud-v2-0a1b2c3d",
        "AlarmNames": [f"{prefix}-fraud-v2-errors"],
        "AlarmName": f"{prefix}-fraud-v2-errors",
        "ModelPackageName": f"arn:aws:sagemaker:{REGION}:{REGISTRY_ACCOUNT}:model-package/fraud/2",
        "ModelPackageArn": f"arn:aws:sagemaker:{REGION}:{REGISTRY_ACCOUNT}:model-package/fraud/2",
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
            filled[name] = _representative(value, prefix, account)
        else:
            filled[name] = value
    return filled


@pytest.mark.parametrize("name", ["deploy_model", "batch_inference"])
def test_every_task_is_allowed_across_accounts_but_recording_on_the_registrys_package(name: str) -> None:
    """The workflows of a cross-account environment: every Task allowed to its role, with the
    registry's resource policies where the resource is the registry's; the only refusals are the
    best-effort Record* steps (UpdateModelPackage), whose Catch goes on: the registry is read only."""
    deployed, registry = synthesized("staging", multi_account=True), _registry()
    machine_name = f"sagegate-staging-{name.replace('_', '-')}"
    machine = deployed.logical_id("AWS::StepFunctions::StateMachine", StateMachineName=machine_name)
    role = deployed.role_of("AWS::StepFunctions::StateMachine", StateMachineName=machine_name)
    identity, principal = deployed.role_statements(role), deployed.role_arn(role)
    definition = json.loads(deployed.definition(machine))
    assert f"arn:aws:sagemaker:{REGION}:{REGISTRY_ACCOUNT}:model-package" in deployed.definition(machine)
    denied = set()
    for task_name, task in tasks(expand(definition)["States"]):
        kind = integration(task["Resource"])
        service = botocore_service(kind.split(":")[1]) if kind.startswith("aws-sdk:") else kind
        action = task["Resource"].rsplit(":", 1)[-1]
        operation = {"invoke": "Invoke"}.get(action, action[0].upper() + action[1:])
        params = _representative(task.get("Parameters", {}), "sagegate-staging", deployed.account)
        for request in requests_for(Call(role, service, operation, params), account=deployed.account, region=REGION):
            verdict = evaluate(request, identity, registry.resource_statements(), principal=principal)
            if verdict != "allowed":
                denied.add((task_name, request.action))
    recording = {t for t, a in denied if a == "sagemaker:UpdateModelPackage"}
    assert denied == {(t, "sagemaker:UpdateModelPackage") for t in recording}, denied
    assert (len(recording) == 3) == (name == "deploy_model")
