"""Rollouts (stepfunctions/deploy_model.asl.json): the deployment workflow, its Lambda (plans, smoke
verdicts, shadow reports, the autoscaling hand-over), IAM scoped to this environment's endpoints,
models, configs and alarms, and per configured model the EventBridge rule that starts a rollout when
one of its versions is Approved in the registry. The rule's input carries the environment's rollout
policy and how the model is served first: a model's first approved version creates its endpoint."""

from __future__ import annotations

from typing import Any

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.config import ModelConfig
from infra.constructs.access import list_objects, read_objects, write_objects
from infra.constructs.functions import python_function
from infra.constructs.scaling import grant_scaling
from infra.constructs.serving import CAPTURE_PREFIX
from infra.constructs.state_machines import pass_to_sagemaker, state_machine
from infra.nag import (
    acknowledge,
    acknowledge_key_grant,
    arn,
    attribute,
    policy_holder,
    skip_check,
    wildcard_resource,
)
from sagegate.deploy.policy import RolloutPolicy
from sagegate.registry.sagemaker import DEFAULT_PREFIX as REGISTRY_PREFIX
from sagegate.workflows.deploy.plan import FirstEndpoint
from sagegate.workflows.deploy.scaling import Scaling


def approval_events(models: list[str], *, account: str | None = None) -> events.EventPattern:
    """A version of one of `models` Approved or Rejected in the registry (of `account`, where the
    registry is another account's and forwards its events)."""
    return events.EventPattern(
        source=["aws.sagemaker"],
        detail_type=["SageMaker Model Package State Change"],
        detail={"ModelApprovalStatus": ["Approved", "Rejected"], "ModelPackageGroupName": models},
        account=[account] if account else None,
    )


class Rollouts(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        prefix: str,
        code: lambda_.Code,
        key: kms.IKey,
        routes: dynamodb.ITable,
        topic: sns.ITopic,
        sagemaker_role: iam.IRole,
        artifacts: s3.IBucket,
        capture: s3.IBucket,
        reports: s3.IBucket,
        models: list[ModelConfig],
        rollout: RolloutPolicy,
        log_retention: logs.RetentionDays,
        removal: RemovalPolicy,
        registry_account: str | None = None,
    ) -> None:
        super().__init__(scope, id)
        self.prefix = prefix
        self.registry_account = registry_account  # where the model packages are: None, this account
        self.function = python_function(
            self,
            "DeployLogic",
            function_name=f"{prefix}-deploy",
            handler="deploy_handler.handler",
            code=code,
            log_retention=log_retention,
            removal=removal,
            memory_size=512,
            timeout=Duration.minutes(5),
            environment={
                "SAGEGATE_KMS_KEY_ARN": key.key_arn,
                "SAGEGATE_TOPIC_ARN": topic.topic_arn,
                "SAGEGATE_REPORT_BUCKET": reports.bucket_name,
                "SAGEGATE_CAPTURE_URI": capture.s3_url_for_object(CAPTURE_PREFIX),
                "POWERTOOLS_SERVICE_NAME": "sagegate-deploy",
            },
        )
        logic = self.function
        skip_check(
            logic,
            "CKV_AWS_116",
            "the deployment workflow is its only caller and invokes it synchronously (lambda:invoke, request and"
            " response), retrying and catching its errors in the state machine: no event can be lost",
        )
        skip_check(
            logic,
            "CKV_AWS_117",
            "it calls AWS APIs only (SageMaker, Application Auto Scaling, CloudWatch, S3) and reaches nothing in"
            " the VPC; in it, it would need an interface endpoint per service for no isolation gained",
        )
        read_objects(logic, artifacts, f"{REGISTRY_PREFIX}/", why="a manifest's sample for the smoke test")
        list_objects(logic, capture, f"{CAPTURE_PREFIX}/")
        read_objects(logic, capture, f"{CAPTURE_PREFIX}/", why="captured answers of a shadow run, to compare")
        write_objects(logic, reports, "shadow-reports/", why="the shadow comparison's report")
        logic.add_to_role_policy(iam.PolicyStatement(actions=["cloudwatch:GetMetricData"], resources=["*"]))
        acknowledge(
            policy_holder(logic), wildcard_resource("*"), "cloudwatch:GetMetricData has no resource-level scope"
        )
        grant_scaling(logic, prefix)  # sagegate.workflows.deploy.scaling moves the targets across a rollout

        self.machine = state_machine(
            self,
            "deploy_model",
            prefix=prefix,
            substitutions={
                "EndpointPrefix": f"{prefix}-",
                "ModelPackageArnPrefix": Stack.of(self).format_arn(
                    service="sagemaker", resource="model-package", account=registry_account
                ),
                "RouteTable": routes.table_name,
                "TopicArn": topic.topic_arn,
                "DeployFunctionArn": logic.function_arn,
                "SageMakerRoleArn": sagemaker_role.role_arn,
            },
            log_retention=log_retention,
            removal=removal,
        )
        names = [m.name for m in models]
        self._grant_machine(names, key=key, routes=routes, topic=topic, sagemaker_role=sagemaker_role)
        # Only configured models roll out on approval: one rule each (its input says how the model is
        # served first); an environment with none configured starts nothing.
        self.policy = rollout
        self.on_approval = {m.name: self._on_approval(m) for m in models}

    def _arn(self, resource: str, name: str, account: str | None = None) -> str:
        return Stack.of(self).format_arn(service="sagemaker", resource=resource, resource_name=name, account=account)

    def _alarm_arn(self, name: str) -> str:
        return Stack.of(self).format_arn(
            service="cloudwatch", resource="alarm", resource_name=name, arn_format=ArnFormat.COLON_RESOURCE_NAME
        )

    def _grant_machine(
        self, models: list[str], *, key: kms.IKey, routes: dynamodb.ITable, topic: sns.ITopic, sagemaker_role: iam.IRole
    ) -> None:
        role, prefix = self.machine.role, self.prefix
        packages = [f"{m}/*" for m in models] or ["*/*"]
        # A registry of another account is read only: the outcome is not recorded on its packages
        # (the workflow's Record* steps carry on when that is refused); the route table keeps it.
        package_actions = (
            ["DescribeModelPackage"] if self.registry_account else ["DescribeModelPackage", "UpdateModelPackage"]
        )
        for actions, resources in (
            (package_actions, [self._arn("model-package", p, self.registry_account) for p in packages]),
            (["CreateModel", "DeleteModel", "AddTags"], [self._arn("model", f"{prefix}-*")]),
            (  # UpdateEndpoint authorizes on the endpoint and on the config it moves to
                ["CreateEndpointConfig", "DeleteEndpointConfig", "DescribeEndpointConfig", "UpdateEndpoint"],
                [self._arn("endpoint-config", f"{prefix}-*")],
            ),
            (  # CreateEndpoint authorizes on the endpoint and on its config (a model's first version),
                # its tags on both
                ["CreateEndpoint", "AddTags"],
                [self._arn("endpoint", f"{prefix}-*"), self._arn("endpoint-config", f"{prefix}-*")],
            ),
            (
                [
                    "DescribeEndpoint",
                    "UpdateEndpoint",
                    "UpdateEndpointWeightsAndCapacities",
                    "InvokeEndpoint",
                    "DeleteEndpoint",
                ],
                [self._arn("endpoint", f"{prefix}-*")],
            ),
        ):
            role.add_to_principal_policy(
                iam.PolicyStatement(actions=[f"sagemaker:{a}" for a in actions], resources=resources)
            )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms", "cloudwatch:DescribeAlarms"],
                resources=[self._alarm_arn(f"{prefix}-*")],
            )
        )
        pass_to_sagemaker(role, sagemaker_role)
        key.grant(role, "kms:CreateGrant", "kms:DescribeKey")  # endpoint configs name the key
        routes.grant_read_write_data(role)
        topic.grant_publish(role)
        self.function.grant_invoke(role)
        for name in packages:
            acknowledge(
                role,
                wildcard_resource(arn(self, "sagemaker", f"model-package/{name}", account=self.registry_account)),
                "every version of this environment's configured models: versions are made after deploy",
            )
        for name in (f"model/{prefix}-*", f"endpoint-config/{prefix}-*", f"endpoint/{prefix}-*", f"alarm:{prefix}-*"):
            acknowledge(
                role,
                wildcard_resource(arn(self, "cloudwatch" if name.startswith("alarm") else "sagemaker", name)),
                "the workflow names the models, configs and alarms of each rollout at run time, under this"
                " environment's prefix; nothing outside it",
            )
        acknowledge(
            role,
            wildcard_resource(attribute(self.function, ":*")),
            "CDK's grant_invoke covers the versions of the workflow's own Lambda",
        )
        acknowledge_key_grant(role, "the route table and the topic")

    def workflow_input(self, model: ModelConfig) -> dict[str, Any]:
        """The deployment workflow's input for a version of `model` (all but model and version): the
        environment's rollout policy, and how its first version is served when it has no endpoint."""
        policy: dict[str, Any] = self.policy.workflow_input("<model>", "<version>")
        policy.pop("model")
        policy.pop("version")
        first = FirstEndpoint(
            instance_type=model.first_instance_type,
            instance_count=model.first_instance_count,
            gpus=model.first_gpus,
            autoscaling=Scaling.model_validate(model.autoscaling.model_dump()),
            capture_percent=model.data_capture_percent,
        )
        return {**policy, "first": first.model_dump()}

    def _on_approval(self, model: ModelConfig) -> events.Rule:
        """A version Approved in the registry starts its rollout with the environment's policy (the
        first one creates the endpoint); a version Rejected forgets its rolled-back rollout, so that
        approving it again deploys it again. SageMaker also sends this event when the workflow
        records a rollout's outcome on the package: the workflow's claim turns those away (trigger
        "approval" never re-deploys a version)."""
        rule = events.Rule(
            self,
            f"OnApproval{model.name}",
            description=f"{self.prefix}: a {model.name} package approved -> deploy_model (rejected -> forget)",
            # forwarded by the registry stack from its account (infra/constructs/registry.py)
            event_pattern=approval_events([model.name], account=self.registry_account),
        )
        rule.add_target(
            targets.SfnStateMachine(
                self.machine,
                input=events.RuleTargetInput.from_object(
                    {
                        "model": events.EventField.from_path("$.detail.ModelPackageGroupName"),
                        "version": events.EventField.from_path("$.detail.ModelPackageVersion"),
                        "approval": events.EventField.from_path("$.detail.ModelApprovalStatus"),
                        "trigger": "approval",
                        **self.workflow_input(model),
                    }
                ),
            )
        )
        return rule
