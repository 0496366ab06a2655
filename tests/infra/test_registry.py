"""One registry for several accounts (registry_account): the registry stack's resources and resource
policies, the environment roles that name them, and the default (same account) left as it was.
The settings are tests/multi_account.py's: staging and prod deploy from a registry account, dev
keeps its own registry."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk

from infra.app import build, registry_stack
from infra.config import CONTEXT_KEY, ConfigError, load_environments, registry_of
from infra.constructs.images import PULL_ACTIONS
from tests.aws_rules.template import Deployed, synthesized
from tests.multi_account import CROSS_ACCOUNT, REGISTRY_ACCOUNT, context, pinned_context

ROOT = Path(__file__).resolve().parents[2]
REGION = "eu-west-1"
ACCOUNTS = {"staging": "222222222222", "prod": "333333333333"}
READ_ACTIONS = {
    "s3:GetObject",
    "kms:Decrypt",
    *PULL_ACTIONS,
    "sagemaker:DescribeModelPackage",
    "sagemaker:DescribeModelPackageGroup",
    "sagemaker:ListModelPackages",
    "sagemaker:CreateModel",  # from the package, in the caller's own account (SageMaker authorizes it on the package)
}


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _role(env: str, reader: str) -> str:
    return f"arn:aws:iam::{ACCOUNTS[env]}:role/sagegate-{env}-{reader}"


@pytest.fixture(scope="module")
def registry() -> Deployed:
    return synthesized("registry", multi_account=True)


def test_the_default_synthesizes_as_before_and_makes_no_registry_stack(tmp_path: Path) -> None:
    plain = json.loads((ROOT / "cdk.json").read_text())["context"]
    app = cdk.App(context={**plain, "aws:cdk:bundling-stacks": []}, outdir=str(tmp_path / "plain"))
    build(app, nag=False)
    assert registry_stack(app) is None
    # dev keeps its own registry in both settings: its template is the same, whatever the others do.
    same = synthesized("dev").template
    beside_cross_account = synthesized("dev", multi_account=True).template
    assert same["Resources"] == beside_cross_account["Resources"]
    kinds = {r["Type"] for r in same["Resources"].values()}
    assert "AWS::Events::EventBusPolicy" not in kinds
    assert "AWS::ECR::Repository" in kinds
    assert REGISTRY_ACCOUNT not in json.dumps(same)
    assert not [
        r for r in same["Resources"].values() if r["Type"] == "AWS::IAM::Role" and "RoleName" in r["Properties"]
    ]


def test_the_registry_holds_the_bucket_key_groups_and_images(registry: Deployed) -> None:
    assert (registry.account, registry.region, registry.stack) == (REGISTRY_ACCOUNT, REGION, "sagegate-registry")
    bucket = registry.logical_id("AWS::S3::Bucket", BucketName=f"sagegate-registry-{REGISTRY_ACCOUNT}-{REGION}")
    props = registry.properties(bucket)
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["LoggingConfiguration"]["DestinationBucketName"]
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    statements = [
        s
        for p in registry.of_type("AWS::S3::BucketPolicy")
        for s in registry.properties(p)["PolicyDocument"]["Statement"]
    ]
    assert any(
        s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}} for s in statements
    )
    groups = {
        registry.properties(g)["ModelPackageGroupName"] for g in registry.of_type("AWS::SageMaker::ModelPackageGroup")
    }
    assert groups == {"fraud", "images"}
    repositories = {registry.properties(r)["RepositoryName"] for r in registry.of_type("AWS::ECR::Repository")}
    assert repositories == {"sagegate-registry-inference", "sagegate-registry-inference-gpu", "sagegate-registry-batch"}
    assert all(
        registry.resources[g]["DeletionPolicy"] == "Retain"
        for g in registry.of_type("AWS::SageMaker::ModelPackageGroup")
    )


def _cross_account(registry: Deployed) -> list[dict[str, Any]]:
    """The Allow statements of the registry's resource policies that name another account."""
    own = {f"arn:aws:iam::{REGISTRY_ACCOUNT}:root", REGISTRY_ACCOUNT}
    found = []
    for statement in registry.resource_statements():
        principal = statement.get("Principal")
        if statement["Effect"] != "Allow" or not isinstance(principal, dict) or "AWS" not in principal:
            continue
        if set(_listed(principal["AWS"])) - own:
            found.append(statement)
    return found


def test_the_resource_policies_grant_exactly_the_environments_readers_and_never_a_write(registry: Deployed) -> None:
    statements = _cross_account(registry)
    assert statements
    granted: dict[str, set[str]] = {}
    for statement in statements:
        assert set(_listed(statement["Principal"]["AWS"])) == {f"arn:aws:iam::{a}:root" for a in ACCOUNTS.values()}
        roles = set(_listed(statement["Condition"]["ArnEquals"]["aws:PrincipalArn"]))
        actions = set(_listed(statement["Action"]))
        assert actions <= READ_ACTIONS, f"a write for another account: {actions - READ_ACTIONS}"
        for action in actions:
            granted.setdefault(action, set()).update(roles)
    every = {"staging", "prod"}
    assert granted["s3:GetObject"] == {
        _role(e, r) for e in every for r in ("sagemaker", "gateway", "deploy-logic", "monitor")
    }
    assert granted["kms:Decrypt"] == granted["s3:GetObject"]
    assert granted["ecr:BatchGetImage"] == {_role(e, "sagemaker") for e in every}
    packages = {_role(e, r) for e in every for r in ("gateway", "deploy", "batch", "endpoint-owner", "monitor")}
    assert granted["sagemaker:DescribeModelPackage"] == packages
    # Objects: the packages only; the key: through S3 only.
    (objects,) = [s for s in statements if "s3:GetObject" in _listed(s["Action"])]
    assert objects["Resource"] == f"arn:aws:s3:::sagegate-registry-{REGISTRY_ACCOUNT}-{REGION}/models/*"
    (decrypt,) = [s for s in statements if "kms:Decrypt" in _listed(s["Action"])]
    assert decrypt["Condition"]["StringEquals"] == {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}


def test_approvals_are_forwarded_to_each_environments_bus(registry: Deployed) -> None:
    (rule,) = registry.of_type("AWS::Events::Rule")
    props = registry.properties(rule)
    assert props["EventPattern"]["detail"]["ModelPackageGroupName"] == ["fraud", "images"]
    buses = {t["Arn"] for t in props["Targets"]}
    assert buses == {f"arn:aws:events:{REGION}:{a}:event-bus/default" for a in ACCOUNTS.values()}


@pytest.mark.parametrize("env", CROSS_ACCOUNT)
def test_the_environment_names_the_registrys_resources_and_takes_its_events(env: str, registry: Deployed) -> None:
    deployed = synthesized(env, multi_account=True)
    # the serving images are built once, in the registry; only the monitor Lambda's is the environment's
    # own (Lambda pulls its image from its own account)
    repositories = {deployed.properties(r)["RepositoryName"] for r in deployed.of_type("AWS::ECR::Repository")}
    assert repositories == {f"sagegate-{env}-monitor"}
    sagemaker = deployed.role_statements(deployed.role_named(f"sagegate-{env}-sagemaker"))
    resources = {r for s in sagemaker for r in _listed(s["Resource"])}
    assert f"arn:aws:s3:::sagegate-registry-{REGISTRY_ACCOUNT}-{REGION}/models/*" in resources
    assert {
        f"arn:aws:ecr:{REGION}:{REGISTRY_ACCOUNT}:repository/sagegate-registry-{i}" for i in ("inference", "batch")
    } <= resources
    (decrypt,) = [s for s in sagemaker if f"arn:aws:kms:{REGION}:{REGISTRY_ACCOUNT}:key/*" in _listed(s["Resource"])]
    assert decrypt["Action"] == "kms:Decrypt"
    assert decrypt["Condition"] == {"StringEquals": {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}}
    gateway = deployed.role_statements(deployed.role_named(f"sagegate-{env}-gateway"))
    assert f"arn:aws:sagemaker:{REGION}:{REGISTRY_ACCOUNT}:model-package/*" in {
        r for s in gateway for r in _listed(s["Resource"])
    }
    environment = deployed.properties(deployed.logical_id("AWS::Lambda::Function", Handler="gateway_handler.handler"))
    assert (
        environment["Environment"]["Variables"]["SAGEGATE_REGISTRY_BUCKET"]
        == f"sagegate-registry-{REGISTRY_ACCOUNT}-{REGION}"
    )
    variables = environment["Environment"]["Variables"]
    assert (variables["SAGEGATE_REGISTRY_ACCOUNT"], variables["SAGEGATE_REGISTRY_MODELS"]) == (
        REGISTRY_ACCOUNT,
        ",".join(m["name"] for m in context()[CONTEXT_KEY][env]["models"]),
    )
    # Nothing of the environment's names its own account's packages any more.
    assert f":{deployed.account}:model-package" not in json.dumps(deployed.template)
    (policy,) = deployed.of_type("AWS::Events::EventBusPolicy")
    statement = deployed.properties(policy)["Statement"]
    assert statement["Principal"] == {"AWS": f"arn:aws:iam::{REGISTRY_ACCOUNT}:root"}
    assert statement["Action"] == "events:PutEvents"
    approvals = [
        deployed.properties(r)["EventPattern"]
        for r in deployed.of_type("AWS::Events::Rule")
        if deployed.properties(r).get("EventPattern", {}).get("detail-type") == ["SageMaker Model Package State Change"]
    ]
    # one rule per model, each for the registry's events only
    assert [p["account"] for p in approvals] == [[REGISTRY_ACCOUNT]] * len(context()[CONTEXT_KEY][env]["models"])
    # The images it runs are the registry's builds: the same tags.
    tags = {registry.properties(i)["Tag"] for i in registry.of_type("Custom::SagegateImage")}
    uris = {deployed.properties(p)["Value"] for p in deployed.of_type("AWS::SSM::Parameter")}
    assert {u.rsplit(":", 1)[1] for u in uris} <= tags
    assert all(u.startswith(f"{REGISTRY_ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/sagegate-registry-") for u in uris)


def _with(env: str, **changes: Any) -> dict[str, Any]:
    found: dict[str, Any] = context()[CONTEXT_KEY]
    found[env] = {**found[env], **changes}
    return found


@pytest.mark.parametrize(
    ("environments", "message"),
    [
        (_with("staging", registry_account="222222222222"), "registry_account is this environment's own account"),
        (  # dev pins fraud/1 of its own account, yet deploys from the registry
            {
                **context()[CONTEXT_KEY],
                "dev": {**pinned_context()[CONTEXT_KEY]["dev"], "registry_account": REGISTRY_ACCOUNT},
            },
            "the package must be in the registry",
        ),
        (_with("staging", registry_account="555555555555", models=[]), "more than one registry"),
        (  # the registry in dev's account: dev's packages would be the registry's, its roles not readers
            {
                **_with("staging", registry_account="111111111111", models=[]),
                "prod": {**context()[CONTEXT_KEY]["prod"], "registry_account": "111111111111", "models": []},
            },
            "also an environment's account",
        ),
        (
            {**context()[CONTEXT_KEY], "registry": {"account": "555555555555", "region": REGION}},
            "names the registry stack",
        ),
    ],
)
def test_a_registry_setting_that_cannot_work_fails_with_the_reason(environments: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        registry_of(load_environments(environments))
