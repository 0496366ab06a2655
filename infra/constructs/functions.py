"""The project's Lambda functions: one runtime (the one the bundle's wheels are built for), each
function with its own log group and a role that may write to that log group only (no managed
policies), plus the network-interface actions when the function runs in the VPC."""

from __future__ import annotations

from typing import Any

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.constructs.bundling import RUNTIME
from infra.nag import acknowledge, skip_check, wildcard_resource

# What AWSLambdaVPCAccessExecutionRole grants, written out: Lambda creates and deletes the
# function's network interfaces with these, and EC2 scopes none of them to a resource before it exists.
VPC_ACCESS_ACTIONS = [
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
]


def python_function(
    scope: Construct,
    id: str,
    *,
    handler: str,
    code: lambda_.Code,
    log_retention: logs.RetentionDays,
    removal: RemovalPolicy,
    vpc: ec2.IVpc | None = None,
    **options: Any,
) -> lambda_.Function:
    role, log_group = _role_and_logs(scope, id, log_retention, removal)
    if vpc is not None:
        # A policy of their own (in the role, so the function waits for it): checkov's skip below is for them alone.
        statement = iam.PolicyStatement(actions=VPC_ACCESS_ACTIONS, resources=["*"])
        vpc_access = iam.Policy(role, "VpcAccess", roles=[role], statements=[statement])
        skip_check(
            vpc_access,
            "CKV_AWS_111",
            "the network-interface actions that Lambda needs on the execution role of a function in a VPC, as"
            " AWSLambdaVPCAccessExecutionRole grants them: on Resource *, for interfaces that do not exist yet",
        )
        acknowledge(
            role,
            wildcard_resource("*"),
            "the function's network interfaces in the VPC: EC2 has no resource scope for them before they exist",
        )
        options["vpc_subnets"] = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
    if options.get("tracing") == lambda_.Tracing.ACTIVE:
        acknowledge(role, wildcard_resource("*"), "X-Ray's PutTraceSegments/PutTelemetryRecords have no resource scope")
    function = lambda_.Function(
        scope,
        id,
        runtime=RUNTIME,
        architecture=lambda_.Architecture.X86_64,
        handler=handler,
        code=code,
        role=role,
        log_group=log_group,
        vpc=vpc,
        **options,
    )
    acknowledge(
        function,
        "L1",
        f"{RUNTIME.name} is the runtime the bundle's wheels are built for (bundling.RUNTIME drives both) and"
        " the one the platform is tested on; a newer one is a deliberate change of both, not a drift",
    )
    return function


def image_function(
    scope: Construct,
    id: str,
    *,
    code: lambda_.DockerImageCode,
    log_retention: logs.RetentionDays,
    removal: RemovalPolicy,
    **options: Any,
) -> lambda_.DockerImageFunction:
    """A function from a container image of the stack (outside the VPC), with the same role and log
    group as the others."""
    role, log_group = _role_and_logs(scope, id, log_retention, removal)
    return lambda_.DockerImageFunction(
        scope, id, code=code, role=role, log_group=log_group, architecture=lambda_.Architecture.X86_64, **options
    )


def _role_and_logs(
    scope: Construct, id: str, log_retention: logs.RetentionDays, removal: RemovalPolicy
) -> tuple[iam.Role, logs.LogGroup]:
    log_group = logs.LogGroup(scope, f"{id}Logs", retention=log_retention, removal_policy=removal)
    role = iam.Role(
        scope,
        f"{id}Role",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=f"the {id} Lambda: its own log group, and what the stack grants it",
    )
    role.add_to_policy(
        iam.PolicyStatement(actions=["logs:CreateLogStream", "logs:PutLogEvents"], resources=[log_group.log_group_arn])
    )
    return role, log_group
