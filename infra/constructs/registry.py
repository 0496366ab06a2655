"""One registry for environments in other accounts (`registry_account`). The registry account holds
the artifacts bucket (packages under models/), its KMS key, the model package groups and the image
repositories; each of them has a resource policy that lets the environments' reader roles read, and
nothing more. The environment side names the same resources by the ARNs they will have: every name
is fixed, so an environment stack needs nothing from the registry stack at synth time.

Resource policies name an environment account's root with a condition on aws:PrincipalArn, not the
roles themselves: a policy naming a role that does not exist yet is refused, and the registry is
deployed first. The readers have fixed names (`<env prefix>-<reader>`) for this reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from infra.config import RegistryConfig
from infra.constructs.data import access_logs_bucket, encrypted_bucket, environment_key
from infra.constructs.images import PULL_ACTIONS
from infra.constructs.rollouts import approval_events
from infra.nag import acknowledge, arn, policy_holder, wildcard_resource
from sagegate.registry.sagemaker import DEFAULT_PREFIX as REGISTRY_PREFIX

__all__ = ["READERS", "Reader", "Registry", "bucket_name", "grant_decrypt_packages", "reader_role_name"]

# What the registry lets an environment's model package readers do: read, and CreateModel, which
# SageMaker authorizes on the package too (its guide's cross-account deployment) and which creates
# the model in the caller's own account. Nothing in the registry is written from an environment.
PACKAGE_ACTIONS = ["sagemaker:DescribeModelPackage", "sagemaker:ListModelPackages", "sagemaker:CreateModel"]
GROUP_ACTIONS = ["sagemaker:DescribeModelPackageGroup"]


@dataclass(frozen=True)
class Reader:
    """A role of an environment that reads the registry: package objects (models/*, decrypted through
    S3), the model packages, or the images."""

    name: str
    objects: bool = False
    packages: bool = False
    images: bool = False


READERS = (
    Reader("sagemaker", objects=True, images=True),  # the execution role: model data, image pulls
    Reader("gateway", objects=True, packages=True),  # manifests; lists and reads the versions
    Reader("deploy-logic", objects=True),  # a manifest's sample for the smoke test
    Reader("deploy", packages=True),  # the deploy workflow: DescribeModelPackage, CreateModel
    Reader("batch", packages=True),  # the batch workflow: the same
    Reader("endpoint-owner", packages=True),  # the endpoint custom resource's first models
    Reader("monitor", objects=True, packages=True),  # the monitoring workflow: versions, manifests, baselines
)


def reader_role_name(environment_prefix: str, reader: str) -> str:
    return f"{environment_prefix}-{reader}"


def bucket_name(account: str, region: str) -> str:
    return f"sagegate-registry-{account}-{region}"


def grant_decrypt_packages(grantee: iam.IGrantable, registry_account: str) -> None:
    """Beside s3:GetObject on the registry bucket's models/*: kms:Decrypt of the registry's key, through
    S3 only (its id is made in the registry account, so it is named by its account)."""
    holder = policy_holder(grantee)
    stack = Stack.of(holder)
    iam.Grant.add_to_principal(
        grantee=grantee,
        actions=["kms:Decrypt"],
        resource_arns=[stack.format_arn(service="kms", resource="key", resource_name="*", account=registry_account)],
        conditions={"StringEquals": {"kms:ViaService": f"s3.{stack.region}.amazonaws.com"}},
    )
    acknowledge(
        holder,
        wildcard_resource(arn(holder, "kms", "key/*", account=registry_account)),
        "the registry's key, whose id is made in the registry account: decrypt only, through S3 only; the key"
        " policy there names this role",
    )


class Registry(Construct):
    def __init__(self, scope: Construct, id: str, *, config: RegistryConfig, removal: RemovalPolicy) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        self.config = config
        self.key = environment_key(self, config.prefix, "model packages, images, logs", removal)
        self.artifacts = encrypted_bucket(
            self,
            "Artifacts",
            key=self.key,
            access_logs=access_logs_bucket(self, removal),
            removal=removal,
            expire_days=None,
            ia_days=90,
            keep_days=90,
            bucket_name=bucket_name(config.account, config.region),
        )
        readers = self.readers("objects")
        self.artifacts.add_to_resource_policy(
            iam.PolicyStatement(
                sid="EnvironmentsReadPackages",
                principals=self._accounts(),
                actions=["s3:GetObject"],
                resources=[self.artifacts.arn_for_objects(f"{REGISTRY_PREFIX}/*")],
                conditions={"ArnEquals": {"aws:PrincipalArn": readers}},
            )
        )
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="EnvironmentsDecryptPackages",
                principals=self._accounts(),
                actions=["kms:Decrypt"],
                resources=["*"],
                conditions={
                    "StringEquals": {"kms:ViaService": f"s3.{stack.region}.amazonaws.com"},
                    "ArnEquals": {"aws:PrincipalArn": readers},
                },
            )
        )
        self.groups = {model: self._group(model) for model in config.models}
        if config.models:  # an approval matters to the environments only for a model they serve
            self._forward_approvals()

    def readers(self, what: str) -> list[str]:
        """The ARNs of the environments' roles that read `what` (objects, packages, images)."""
        stack = Stack.of(self)
        return [
            stack.format_arn(
                service="iam",
                region="",
                account=account,
                resource="role",
                resource_name=reader_role_name(f"sagegate-{env}", reader.name),
            )
            for env, account in self.config.environments.items()
            for reader in READERS
            if getattr(reader, what)
        ]

    def _accounts(self) -> list[iam.IPrincipal]:
        return [iam.AccountPrincipal(a) for a in sorted(set(self.config.environments.values()))]

    def allow_pull(self, repositories: Iterable[ecr.Repository]) -> None:
        """The environments' SageMaker roles pull the images built here."""
        for repository in repositories:
            repository.add_to_resource_policy(
                iam.PolicyStatement(
                    sid="EnvironmentsPull",
                    principals=self._accounts(),
                    actions=PULL_ACTIONS,
                    conditions={"ArnEquals": {"aws:PrincipalArn": self.readers("images")}},
                )
            )

    def _group(self, model: str) -> sagemaker.CfnModelPackageGroup:
        """The model's group, made here so that its policy exists before anything is registered
        (`sagegate register` finds the group and adds versions to it)."""
        stack = Stack.of(self)
        group_arn = stack.format_arn(service="sagemaker", resource="model-package-group", resource_name=model)
        packages = stack.format_arn(service="sagemaker", resource="model-package", resource_name=f"{model}/*")
        readers = {"ArnEquals": {"aws:PrincipalArn": self.readers("packages")}}
        policy = iam.PolicyDocument(
            statements=[
                iam.PolicyStatement(
                    sid="EnvironmentsReadGroup",
                    principals=self._accounts(),
                    actions=GROUP_ACTIONS,
                    resources=[group_arn],
                    conditions=readers,
                ),
                iam.PolicyStatement(
                    sid="EnvironmentsReadPackages",
                    principals=self._accounts(),
                    actions=PACKAGE_ACTIONS,
                    resources=[packages],
                    conditions=readers,
                ),
            ]
        )
        group = sagemaker.CfnModelPackageGroup(
            self,
            f"Group{model.title().replace('-', '')}",
            model_package_group_name=model,
            model_package_group_description=f"sagegate model {model}",
            model_package_group_policy=policy.to_json(),
        )
        group.apply_removal_policy(RemovalPolicy.RETAIN)  # its versions are what was registered
        return group

    def _forward_approvals(self) -> None:
        """Approvals (and rejections) of the groups' versions go to each environment's default bus,
        where its rollout rule (infra/constructs/rollouts.py) matches events of this account."""
        stack = Stack.of(self)
        role = iam.Role(
            self,
            "ForwardRole",
            assumed_by=iam.ServicePrincipal("events.amazonaws.com"),
            description=f"{self.config.prefix}: puts the registry's approval events on the environments' buses",
        )
        rule = events.Rule(
            self,
            "ForwardApprovals",
            description=f"{self.config.prefix}: a model package approved or rejected -> the environments",
            event_pattern=approval_events(self.config.models),
        )
        for env, account in self.config.environments.items():
            bus = events.EventBus.from_event_bus_arn(
                self,
                f"Bus{env.title().replace('-', '')}",
                stack.format_arn(service="events", account=account, resource="event-bus", resource_name="default"),
            )
            rule.add_target(targets.EventBus(bus, role=role))
