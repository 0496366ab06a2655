"""A synthesized stack read as CloudFormation would deploy it: every resource gets the physical name
CloudFormation would give it, and every value (Ref, Fn::GetAtt, Fn::Join, Fn::Sub, pseudo parameters)
resolves to a concrete string, so that tests can build a moto account from the template and check
IAM policies against real resource names.

Names CloudFormation makes itself (no name property in the template) follow its documented scheme,
`<stack>-<logical id>-<random>` (lower case for S3), except SageMaker's models and endpoint configs,
which CloudFormation names `<logical id>-<random>`: outside any name prefix, which is what a role
scoped to `sagegate-<env>-*` would meet in a real account. The random part is a stable hash here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["Deployed", "synthesized"]

ROOT = Path(__file__).resolve().parents[2]

# Property that names a resource, per type; absent: CloudFormation generates the name.
_NAME_PROPERTY = {
    "AWS::S3::Bucket": "BucketName",
    "AWS::DynamoDB::GlobalTable": "TableName",
    "AWS::DynamoDB::Table": "TableName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::IAM::Role": "RoleName",
    "AWS::Lambda::Function": "FunctionName",
    "AWS::StepFunctions::StateMachine": "StateMachineName",
    "AWS::SageMaker::Model": "ModelName",
    "AWS::SageMaker::EndpointConfig": "EndpointConfigName",
    "AWS::SageMaker::Endpoint": "EndpointName",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::KinesisFirehose::DeliveryStream": "DeliveryStreamName",
    "AWS::ElastiCache::ReplicationGroup": "ReplicationGroupId",
    "AWS::SecretsManager::Secret": "Name",
    "AWS::CloudWatch::Alarm": "AlarmName",
    "AWS::Events::Rule": "Name",
    "AWS::ECR::Repository": "RepositoryName",
    "AWS::CodeBuild::Project": "Name",
    "AWS::Athena::WorkGroup": "Name",
}


def _random(logical_id: str, length: int = 12) -> str:
    return hashlib.sha256(logical_id.encode()).hexdigest()[:length].upper()


@dataclass
class Deployed:
    """One environment's template with physical names; `physical` may be set for resources that the
    test account creates itself (a KMS key's id is moto's)."""

    env: str
    stack: str
    template: dict[str, Any]
    account: str
    region: str
    outdir: Path = ROOT / "cdk.out"
    physical: dict[str, str] = field(default_factory=dict)

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        resources: dict[str, dict[str, Any]] = self.template["Resources"]
        return resources

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v["Type"] == kind}

    # -- names ---------------------------------------------------------------------------------------

    def name(self, logical_id: str) -> str:
        """The resource's physical name (or id)."""
        if logical_id in self.physical:
            return self.physical[logical_id]
        resource = self.resources[logical_id]
        prop = _NAME_PROPERTY.get(resource["Type"])
        if prop and prop in resource.get("Properties", {}):
            return str(self.resolve(resource["Properties"][prop]))
        kind = resource["Type"]
        nested = {"AWS::Glue::Database": "DatabaseInput", "AWS::Glue::Table": "TableInput"}  # Ref: their name
        if kind in nested:
            return str(self.resolve(resource["Properties"][nested[kind]]["Name"]))
        if kind in ("AWS::SageMaker::Model", "AWS::SageMaker::EndpointConfig"):
            return f"{logical_id[:50]}-{_random(logical_id)}"
        if kind == "AWS::S3::Bucket":
            return f"{self.stack}-{logical_id}-{_random(logical_id)}".lower()[:63]
        if kind == "AWS::KMS::Key":
            return str(hashlib.md5(logical_id.encode()).hexdigest())  # a key id
        return f"{self.stack}-{logical_id}-{_random(logical_id)}"[:64]

    def arn(self, service: str, resource: str, *, region: bool = True, account: bool = True) -> str:
        return f"arn:aws:{service}:{self.region if region else ''}:{self.account if account else ''}:{resource}"

    def ref(self, logical_id: str) -> str:
        kind, name = self.resources[logical_id]["Type"], self.name(logical_id)
        arn_refs = {
            "AWS::SNS::Topic": lambda: self.arn("sns", name),
            "AWS::StepFunctions::StateMachine": lambda: self.arn("states", f"stateMachine:{name}"),
            "AWS::SageMaker::Model": lambda: self.arn("sagemaker", f"model/{name.lower()}"),
            "AWS::SageMaker::EndpointConfig": lambda: self.arn("sagemaker", f"endpoint-config/{name.lower()}"),
            "AWS::SageMaker::Endpoint": lambda: self.arn("sagemaker", f"endpoint/{name.lower()}"),
            "AWS::SecretsManager::Secret": lambda: self.arn("secretsmanager", f"secret:{name}-AbCdEf"),
        }
        return arn_refs[kind]() if kind in arn_refs else name

    def get_att(self, logical_id: str, attribute: str) -> str:
        kind, name = self.resources[logical_id]["Type"], self.name(logical_id)
        if attribute == "Arn":
            arns = {
                "AWS::S3::Bucket": lambda: f"arn:aws:s3:::{name}",
                "AWS::DynamoDB::GlobalTable": lambda: self.arn("dynamodb", f"table/{name}"),
                "AWS::DynamoDB::Table": lambda: self.arn("dynamodb", f"table/{name}"),
                "AWS::KMS::Key": lambda: self.arn("kms", f"key/{name}"),
                "AWS::IAM::Role": lambda: f"arn:aws:iam::{self.account}:role/{name}",
                "AWS::Lambda::Function": lambda: self.arn("lambda", f"function:{name}"),
                "AWS::Logs::LogGroup": lambda: self.arn("logs", f"log-group:{name}:*"),
                "AWS::KinesisFirehose::DeliveryStream": lambda: self.arn("firehose", f"deliverystream/{name}"),
                "AWS::SQS::Queue": lambda: self.arn("sqs", name),
                "AWS::Events::Rule": lambda: self.arn("events", f"rule/{name}"),
                "AWS::ECR::Repository": lambda: self.arn("ecr", f"repository/{name}"),
                "AWS::CodeBuild::Project": lambda: self.arn("codebuild", f"project/{name}"),
            }
            if kind in arns:
                return arns[kind]()
        by_name = {
            ("AWS::SageMaker::Model", "ModelName"),
            ("AWS::SageMaker::EndpointConfig", "EndpointConfigName"),
            ("AWS::SageMaker::Endpoint", "EndpointName"),
            ("AWS::StepFunctions::StateMachine", "Name"),
            ("AWS::SNS::Topic", "TopicName"),
        }
        if (kind, attribute) in by_name:
            return name
        if kind == "AWS::ElastiCache::ReplicationGroup" and attribute == "PrimaryEndPoint.Address":
            return f"master.{name}.abc123.euw1.cache.amazonaws.com"
        if kind == "AWS::EC2::SecurityGroup" and attribute == "GroupId":
            return f"sg-{_random(logical_id, 17).lower()}"
        return f"{name}.{attribute}"

    # -- values ---------------------------------------------------------------------------------------

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                pseudo = {
                    "AWS::Partition": "aws",
                    "AWS::Region": self.region,
                    "AWS::AccountId": self.account,
                    "AWS::StackName": self.stack,
                    "AWS::URLSuffix": "amazonaws.com",
                }
                return pseudo[arg] if arg in pseudo else self.ref(arg)
            if key == "Fn::GetAtt":
                return self.get_att(arg[0], arg[1])
            if key == "Fn::Join":
                return str(arg[0]).join(str(self.resolve(v)) for v in arg[1])
            if key == "Fn::Sub":
                text, names = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))
                return re.sub(
                    r"\$\{([^}]+)\}",
                    lambda m: str(
                        names.get(m[1])
                        or self.resolve({"Ref": m[1]} if "." not in m[1] else {"Fn::GetAtt": m[1].split(".", 1)})
                    ),
                    text,
                )
            if key == "Fn::Select":
                return self.resolve(arg[1])[int(arg[0])]
            if key == "Fn::Split":
                return str(self.resolve(arg[1])).split(arg[0])
        return {k: self.resolve(v) for k, v in value.items()}

    def properties(self, logical_id: str) -> dict[str, Any]:
        resolved: dict[str, Any] = self.resolve(self.resources[logical_id].get("Properties", {}))
        return resolved

    # -- lookups -------------------------------------------------------------------------------------

    def logical_id(self, kind: str, **properties: Any) -> str:
        """The one resource of `kind` whose resolved properties include these."""
        found = [
            k
            for k in self.of_type(kind)
            if all(self.properties(k).get(name) == value for name, value in properties.items())
        ]
        if len(found) != 1:
            raise LookupError(f"{len(found)} resources of type {kind} with {properties}")
        return found[0]

    def role_of(self, kind: str, **properties: Any) -> str:
        """The logical id of the IAM role a function or state machine runs as."""
        logical = self.logical_id(kind, **properties)
        role = self.resources[logical]["Properties"].get("Role") or self.resources[logical]["Properties"]["RoleArn"]
        return str(role["Fn::GetAtt"][0])

    def role_statements(self, role: str) -> list[dict[str, Any]]:
        """The identity-policy statements of a role: its inline policies and the AWS::IAM::Policy
        resources attached to it (managed policies: none are allowed in these stacks)."""
        properties = self.resources[role]["Properties"]
        assert not properties.get("ManagedPolicyArns"), f"{role} has managed policies"
        statements: list[dict[str, Any]] = []
        for policy in properties.get("Policies", []):
            statements.extend(self.resolve(policy["PolicyDocument"])["Statement"])
        for logical, resource in self.of_type("AWS::IAM::Policy").items():
            if {"Ref": role} in resource["Properties"].get("Roles", []):
                statements.extend(self.properties(logical)["PolicyDocument"]["Statement"])
        return statements

    def role_arn(self, role: str) -> str:
        return self.get_att(role, "Arn")

    def role_named(self, name: str) -> str:
        """The logical id of the role with this fixed name."""
        return self.logical_id("AWS::IAM::Role", RoleName=name)

    def resource_statements(self) -> list[dict[str, Any]]:
        """Every statement of the resource policies of the template, each with the resource it
        guards as its Resource (a key policy's "*" is its key; a repository policy names none)."""
        found: list[dict[str, Any]] = []
        for logical in self.of_type("AWS::S3::BucketPolicy"):
            found.extend(self.properties(logical)["PolicyDocument"]["Statement"])
        for logical in self.of_type("AWS::KMS::Key"):
            key = self.get_att(logical, "Arn")
            for statement in self.properties(logical)["KeyPolicy"]["Statement"]:
                found.append({**statement, "Resource": key})
        for logical in self.of_type("AWS::ECR::Repository"):
            policy = self.properties(logical).get("RepositoryPolicyText")
            for statement in (policy or {}).get("Statement", []):
                found.append({**statement, "Resource": self.get_att(logical, "Arn")})
        for logical in self.of_type("AWS::SageMaker::ModelPackageGroup"):
            policy = self.properties(logical).get("ModelPackageGroupPolicy")
            policy = json.loads(policy) if isinstance(policy, str) else policy
            found.extend((policy or {}).get("Statement", []))
        return found

    def definition(self, machine: str) -> str:
        """A state machine's definition as Step Functions would get it: substitutions applied."""
        properties = self.resources[machine]["Properties"]
        text = properties.get("DefinitionString")
        if text is None:
            location = properties["DefinitionS3Location"]
            text = (self.outdir / f"asset.{location['Key']}").read_text()  # the staged asset
        text = self.resolve(text)
        substitutions = self.resolve(properties.get("DefinitionSubstitutions", {}))
        for name, value in substitutions.items():
            text = text.replace("${" + name + "}", str(value))
        json.loads(text)
        return str(text)


@cache
def _synth(env: str, multi_account: bool, pinned: bool) -> tuple[str, dict[str, Any], str, str, str]:
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    import tempfile

    import aws_cdk as cdk

    from infra.app import build, registry_stack
    from tests.multi_account import context as multi_account_context
    from tests.multi_account import pinned_context

    if multi_account:
        context = multi_account_context()
    elif pinned:
        context = pinned_context()
    else:
        context = json.loads((ROOT / "cdk.json").read_text())["context"]
    outdir = tempfile.mkdtemp(prefix="cdk.out-")
    app = cdk.App(context={**context, "env": env, "aws:cdk:bundling-stacks": []}, outdir=outdir)
    stacks: dict[str, Any] = dict(build(app, nag=False))
    stacks["registry"] = registry_stack(app)
    stack = stacks[env]
    template = app.synth().get_stack_by_name(stack.stack_name).template
    return stack.stack_name, template, str(stack.account), str(stack.region), outdir


def synthesized(env: str = "dev", *, multi_account: bool = False, pinned: bool = False) -> Deployed:
    """The environment's stack, synthesized once per process (a fresh Deployed each call); with
    `multi_account`, from tests/multi_account.py's settings (env "registry": the registry stack);
    with `pinned`, dev's fraud configured with variants (its package fraud/1) as
    tests/multi_account.pinned_context says."""
    stack, template, account, region, outdir = _synth(env, multi_account, pinned)
    return Deployed(
        env=env,
        stack=stack,
        template=json.loads(json.dumps(template)),
        account=account,
        region=region,
        outdir=Path(outdir),
    )
