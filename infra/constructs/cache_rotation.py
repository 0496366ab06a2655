"""Rotation of the cache's AUTH token every `days` (sagegate.cache_auth): a Lambda in the VPC that
Secrets Manager calls step by step, for this one secret only, allowed to modify this one
replication group and to reach it."""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.constructs.functions import python_function
from infra.nag import acknowledge, acknowledge_key_grant, policy_holder, skip_check, wildcard_resource


class CacheRotation(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        prefix: str,
        vpc: ec2.IVpc,
        code: lambda_.Code,
        secret: secretsmanager.Secret,
        cache: elasticache.CfnReplicationGroup,
        cache_security_group: ec2.ISecurityGroup,
        port: int,
        days: int,
        log_retention: logs.RetentionDays,
        removal: RemovalPolicy,
    ) -> None:
        super().__init__(scope, id)
        group_id = cache.replication_group_id
        assert group_id, "the replication group needs a fixed id to be granted by ARN"
        self.security_group = ec2.SecurityGroup(
            self, "Sg", vpc=vpc, description="cache token rotation: to Redis and the VPC endpoints"
        )
        cache_security_group.add_ingress_rule(self.security_group, ec2.Port.tcp(port), "the token rotation")
        self.function = python_function(
            self,
            "Rotation",
            function_name=f"{prefix}-cache-rotation",
            handler="rotation_handler.handler",
            code=code,
            log_retention=log_retention,
            removal=removal,
            memory_size=256,
            timeout=Duration.minutes(15),  # testSecret waits for the group to apply the token
            vpc=vpc,
            security_groups=[self.security_group],
            environment={
                "SAGEGATE_CACHE_REPLICATION_GROUP": group_id,
                "POWERTOOLS_SERVICE_NAME": "sagegate-cache-rotation",
            },
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["elasticache:DescribeReplicationGroups", "elasticache:ModifyReplicationGroup"],
                resources=[
                    Stack.of(self).format_arn(
                        service="elasticache",
                        resource="replicationgroup",
                        resource_name=group_id,
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(actions=["secretsmanager:GetRandomPassword"], resources=["*"])
        )
        acknowledge(
            policy_holder(self.function),
            wildcard_resource("*"),
            "secretsmanager:GetRandomPassword has no resource: it makes a random string",
        )
        self.schedule = secret.add_rotation_schedule(
            "Schedule",
            rotation_lambda=self.function,
            automatically_after=Duration.days(days),
            rotate_immediately_on_update=False,
        )
        self.schedule.node.add_dependency(cache)
        # CDK's invoke permission for Secrets Manager names no source: any account's secret could name this
        # function. Scoped to this account (as AWS's guide advises) and to the one secret it rotates.
        (permission,) = [
            child
            for child in self.function.node.children
            if isinstance(child, lambda_.CfnPermission) and child.principal == "secretsmanager.amazonaws.com"
        ]
        permission.source_account = Stack.of(self).account
        permission.source_arn = secret.secret_arn
        skip_check(
            self.function,
            "CKV_AWS_116",
            "Secrets Manager calls the rotation step by step and waits for each answer, retrying a failed"
            " rotation itself (and marking it failed on the secret): no invocation is asynchronous",
        )
        acknowledge_key_grant(policy_holder(self.function), "the token's secret (encrypted with the environment's key)")
