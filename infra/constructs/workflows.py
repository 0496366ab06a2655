"""The state machines of stepfunctions/ (deploy_model, batch_inference) with their ${...}
substitutions, the deployment workflow's Lambda, IAM scoped to this environment's resources, and
the EventBridge rule that starts a rollout when a model package is Approved."""

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
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.constructs.access import list_objects, read_objects, write_objects
from infra.constructs.functions import python_function
from infra.constructs.serving import CAPTURE_PREFIX
from infra.nag import acknowledge, acknowledge_key_grant, arn, attribute, policy_holder, wildcard_resource
from sagegate.deploy.policy import RolloutPolicy
from sagegate.registry.sagemaker import DEFAULT_PREFIX as REGISTRY_PREFIX
from sagegate.workflows.definitions import DEFINITIONS


class Workflows(Construct):
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
        batch: s3.IBucket,
        batch_image_uri: str,
        models: list[str],
        rollout: RolloutPolicy,
        log_retention: logs.RetentionDays,
        removal: RemovalPolicy,
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)

        def sagemaker_arn(resource: str, name: str) -> str:
            return stack.format_arn(service="sagemaker", resource=resource, resource_name=name)

        def machine(name: str, substitutions: dict[str, str], timeout: Duration) -> sfn.StateMachine:
            log_group = logs.LogGroup(self, f"{name}Logs", retention=log_retention, removal_policy=removal)
            return sfn.StateMachine(
                self,
                name,
                state_machine_name=f"{prefix}-{name.replace('_', '-')}",
                definition_body=sfn.DefinitionBody.from_file(str(DEFINITIONS / f"{name}.asl.json")),
                definition_substitutions=substitutions,
                timeout=timeout,
                tracing_enabled=True,
                logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
            )

        self.deploy_function = python_function(
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
                "SAGEGATE_REPORT_BUCKET": batch.bucket_name,
                "POWERTOOLS_SERVICE_NAME": "sagegate-deploy",
            },
        )
        logic = self.deploy_function
        read_objects(logic, artifacts, f"{REGISTRY_PREFIX}/", why="a manifest's sample for the smoke test")
        list_objects(logic, capture, f"{CAPTURE_PREFIX}/")
        read_objects(logic, capture, f"{CAPTURE_PREFIX}/", why="captured answers of a shadow run, to compare")
        write_objects(logic, batch, "shadow-reports/", why="the shadow comparison's report")
        logic.add_to_role_policy(iam.PolicyStatement(actions=["cloudwatch:GetMetricData"], resources=["*"]))
        self._scaling_handover(logic, prefix, endpoint_arn=sagemaker_arn("endpoint", f"{prefix}-*"))

        self.deploy = machine(
            "deploy_model",
            {
                "EndpointPrefix": f"{prefix}-",
                "ModelPackageArnPrefix": stack.format_arn(service="sagemaker", resource="model-package"),
                "RouteTable": routes.table_name,
                "TopicArn": topic.topic_arn,
                "DeployFunctionArn": self.deploy_function.function_arn,
                "SageMakerRoleArn": sagemaker_role.role_arn,
            },
            Duration.hours(24),
        )
        role = self.deploy.role
        packages = [f"{m}/*" for m in models] or ["*/*"]
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["sagemaker:DescribeModelPackage", "sagemaker:UpdateModelPackage"],
                resources=[sagemaker_arn("model-package", name) for name in packages],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["sagemaker:CreateModel", "sagemaker:DeleteModel", "sagemaker:AddTags"],
                resources=[sagemaker_arn("model", f"{prefix}-*")],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "sagemaker:CreateEndpointConfig",
                    "sagemaker:DeleteEndpointConfig",
                    "sagemaker:DescribeEndpointConfig",
                ],
                resources=[sagemaker_arn("endpoint-config", f"{prefix}-*")],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "sagemaker:DescribeEndpoint",
                    "sagemaker:UpdateEndpoint",
                    "sagemaker:UpdateEndpointWeightsAndCapacities",
                    "sagemaker:InvokeEndpoint",
                ],
                resources=[sagemaker_arn("endpoint", f"{prefix}-*")],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms", "cloudwatch:DescribeAlarms"],
                resources=[
                    stack.format_arn(
                        service="cloudwatch",
                        resource="alarm",
                        resource_name=f"{prefix}-*",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[sagemaker_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )
        key.grant(role, "kms:CreateGrant", "kms:DescribeKey")  # endpoint configs name the key
        routes.grant_read_write_data(role)
        topic.grant_publish(role)
        self.deploy_function.grant_invoke(role)
        for name in packages:
            acknowledge(
                role,
                wildcard_resource(arn(self, "sagemaker", f"model-package/{name}")),
                "every version of this environment's configured models: versions are made after deploy",
            )
        for name in (f"model/{prefix}-*", f"endpoint-config/{prefix}-*", f"endpoint/{prefix}-*", f"alarm:{prefix}-*"):
            service = "cloudwatch" if name.startswith("alarm") else "sagemaker"
            acknowledge(
                role,
                wildcard_resource(arn(self, service, name)),
                "the workflow names the models, configs and alarms of each rollout at run time, under this"
                " environment's prefix; nothing outside it",
            )
        acknowledge(
            role,
            wildcard_resource(attribute(self.deploy_function, ":*")),
            "CDK's grant_invoke covers the versions of the workflow's own Lambda",
        )
        acknowledge_key_grant(role, "the route table and the topic")
        _acknowledge_machine(role)

        self.batch = machine(
            "batch_inference",
            {
                "KmsKeyArn": key.key_arn,
                "BatchImageUri": batch_image_uri,
                "SageMakerRoleArn": sagemaker_role.role_arn,
                "ManifestBucket": batch.bucket_name,
                "TopicArn": topic.topic_arn,
            },
            Duration.hours(48),
        )
        batch_role = self.batch.role
        batch_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "sagemaker:CreateTransformJob",
                    "sagemaker:DescribeTransformJob",
                    "sagemaker:CreateTrainingJob",
                    "sagemaker:DescribeTrainingJob",
                    "sagemaker:AddTags",
                ],
                resources=[sagemaker_arn("transform-job", "*"), sagemaker_arn("training-job", "*")],
            )
        )
        batch_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[sagemaker_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )
        key.grant(batch_role, "kms:CreateGrant", "kms:DescribeKey")  # job volumes and outputs name the key
        write_objects(batch_role, batch, "manifests/", why="the manifest a finished job writes")
        topic.grant_publish(batch_role)
        for kind in ("transform-job", "training-job"):
            acknowledge(
                batch_role,
                wildcard_resource(arn(self, "sagemaker", f"{kind}/*")),
                "job names are made per request at run time (job id); the jobs run as the SageMaker role",
            )
        acknowledge_key_grant(batch_role, "the topic")
        _acknowledge_machine(batch_role)

        self._batch_name = f"{prefix}-batch-inference"
        self._batch_executions = stack.format_arn(
            service="states",
            resource="execution",
            resource_name=f"{self._batch_name}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )

        # A version Approved in the registry starts its rollout with the environment's policy.
        policy: dict[str, Any] = rollout.workflow_input("<model>", "<version>")
        policy.pop("model")
        policy.pop("version")
        self.on_approval = events.Rule(
            self,
            "OnApproval",
            description=f"{prefix}: a model package approved -> deploy_model",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=["SageMaker Model Package State Change"],
                detail={"ModelApprovalStatus": ["Approved"], **({"ModelPackageGroupName": models} if models else {})},
            ),
        )
        self.on_approval.add_target(
            targets.SfnStateMachine(
                self.deploy,
                input=events.RuleTargetInput.from_object(
                    {
                        "model": events.EventField.from_path("$.detail.ModelPackageGroupName"),
                        "version": events.EventField.from_path("$.detail.ModelPackageVersion"),
                        **policy,
                    }
                ),
            )
        )

    def _scaling_handover(self, logic: lambda_.Function, prefix: str, *, endpoint_arn: str) -> None:
        """What sagegate.workflows.scaling does: read the endpoint's variants, move their scalable targets."""
        stack = Stack.of(self)
        logic.add_to_role_policy(iam.PolicyStatement(actions=["sagemaker:DescribeEndpoint"], resources=[endpoint_arn]))
        logic.add_to_role_policy(
            iam.PolicyStatement(
                actions=[
                    "application-autoscaling:DescribeScalableTargets",
                    "application-autoscaling:DescribeScalingPolicies",
                    "application-autoscaling:RegisterScalableTarget",
                    "application-autoscaling:DeregisterScalableTarget",
                    "application-autoscaling:PutScalingPolicy",
                    "application-autoscaling:DeleteScalingPolicy",
                ],
                resources=["*"],
            )
        )
        # Target tracking policies are CloudWatch alarms that Application Auto Scaling makes in the caller's name.
        tracking = stack.format_arn(
            service="cloudwatch",
            resource="alarm",
            resource_name="TargetTracking-endpoint/*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        logic.add_to_role_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:DescribeAlarms", "cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms"],
                resources=[tracking],
            )
        )
        service = "sagemaker.application-autoscaling.amazonaws.com"
        logic.add_to_role_policy(
            iam.PolicyStatement(
                actions=["iam:CreateServiceLinkedRole"],
                resources=[
                    stack.format_arn(
                        service="iam",
                        region="",
                        resource="role",
                        resource_name=f"aws-service-role/{service}/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint",
                    )
                ],
                conditions={"StringLike": {"iam:AWSServiceName": service}},
            )
        )
        holder = policy_holder(logic)
        acknowledge(
            holder,
            wildcard_resource("*"),
            "cloudwatch:GetMetricData has no resource-level scope, nor do Application Auto Scaling's target and"
            " policy actions (the code touches only the variants of this environment's endpoints)",
        )
        acknowledge(
            holder,
            wildcard_resource(arn(self, "sagemaker", f"endpoint/{prefix}-*")),
            "the endpoints of this environment, named by its prefix, including models configured later",
        )
        acknowledge(
            holder,
            wildcard_resource(arn(self, "cloudwatch", "alarm:TargetTracking-endpoint/*")),
            "the alarms Application Auto Scaling names for target tracking on SageMaker variants",
        )

    def grant_describe_batch_jobs(self, grantee: iam.IGrantable) -> None:
        """A batch job's status: DescribeExecution on the batch machine's executions (named by job id)."""
        iam.Grant.add_to_principal(
            grantee=grantee, actions=["states:DescribeExecution"], resource_arns=[self._batch_executions]
        )
        acknowledge(
            policy_holder(grantee),
            wildcard_resource(arn(self, "states", f"execution:{self._batch_name}:*")),
            "execution names are the batch job ids, made per request",
        )


def _acknowledge_machine(role: iam.IRole) -> None:
    acknowledge(
        role,
        wildcard_resource("*"),
        "the state machine's own X-Ray tracing and CloudWatch Logs delivery: those actions have no resource scope",
    )
