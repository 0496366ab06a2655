"""Batch inference (stepfunctions/batch_inference.asl.json): a Batch Transform job, or the batch
engine as a managed-spot training job, over the environment's batch bucket; the manifest of a
finished job; the outcome to the alarm topic."""

from __future__ import annotations

from aws_cdk import ArnFormat, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.constructs.access import write_objects
from infra.constructs.state_machines import machine_name, pass_to_sagemaker, state_machine
from infra.nag import acknowledge, acknowledge_key_grant, arn, policy_holder, wildcard_resource


class BatchJobs(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        prefix: str,
        key: kms.IKey,
        topic: sns.ITopic,
        sagemaker_role: iam.IRole,
        batch: s3.IBucket,
        image_uri: str,
        log_retention: logs.RetentionDays,
        removal: RemovalPolicy,
        registry_account: str | None = None,
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)  # model packages: in registry_account where set, else in this account
        self.machine = state_machine(
            self,
            "batch_inference",
            prefix=prefix,
            substitutions={
                "ModelPackageArnPrefix": stack.format_arn(
                    service="sagemaker", resource="model-package", account=registry_account
                ),
                "KmsKeyArn": key.key_arn,
                "BatchImageUri": image_uri,
                "SageMakerRoleArn": sagemaker_role.role_arn,
                "ManifestBucket": batch.bucket_name,
                "TopicArn": topic.topic_arn,
            },
            log_retention=log_retention,
            removal=removal,
        )
        role = self.machine.role
        jobs = ("transform-job", "training-job")
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "sagemaker:CreateTransformJob",
                    "sagemaker:DescribeTransformJob",
                    "sagemaker:CreateTrainingJob",
                    "sagemaker:DescribeTrainingJob",
                    "sagemaker:AddTags",
                ],
                resources=[stack.format_arn(service="sagemaker", resource=kind, resource_name="*") for kind in jobs],
            )
        )
        # A transform job runs a model made for it from the package (named <prefix>-<job id>, then deleted).
        models = stack.format_arn(service="sagemaker", resource="model", resource_name=f"{prefix}-*")
        packages = stack.format_arn(
            service="sagemaker", resource="model-package", resource_name="*/*", account=registry_account
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["sagemaker:CreateModel", "sagemaker:DeleteModel", "sagemaker:AddTags"], resources=[models]
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["sagemaker:DescribeModelPackage"], resources=[packages])
        )
        pass_to_sagemaker(role, sagemaker_role)
        key.grant(role, "kms:CreateGrant", "kms:DescribeKey")  # job volumes and outputs name the key
        write_objects(role, batch, "manifests/", why="the manifest a finished job writes")
        topic.grant_publish(role)
        acknowledge(
            role,
            wildcard_resource(arn(self, "sagemaker", f"model/{prefix}-*")),
            "each transform job's model is named per job at run time, under this environment's prefix",
        )
        acknowledge(
            role,
            wildcard_resource(arn(self, "sagemaker", "model-package/*/*", account=registry_account)),
            "a batch job may run any registered version of any model (read only: DescribeModelPackage)",
        )
        for kind in jobs:
            acknowledge(
                role,
                wildcard_resource(arn(self, "sagemaker", f"{kind}/*")),
                "job names are made per request at run time (job id); the jobs run as the SageMaker role",
            )
        acknowledge_key_grant(role, "the topic")
        self._name = machine_name(prefix, "batch_inference")
        self._executions = stack.format_arn(
            service="states",
            resource="execution",
            resource_name=f"{self._name}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )

    def grant_describe(self, grantee: iam.IGrantable) -> None:
        """A job's status: DescribeExecution on this machine's executions (named by job id)."""
        iam.Grant.add_to_principal(
            grantee=grantee, actions=["states:DescribeExecution"], resource_arns=[self._executions]
        )
        acknowledge(
            policy_holder(grantee),
            wildcard_resource(arn(self, "states", f"execution:{self._name}:*")),
            "execution names are the batch job ids, made per request",
        )
