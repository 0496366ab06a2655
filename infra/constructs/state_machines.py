"""A state machine of stepfunctions/ with its retriers expanded and its ${...} substitutions, its own
log group (ALL, with execution data) and X-Ray tracing; and the grants every one of them needs. The
execution timeout is the definition's own TimeoutSeconds (CDK's `timeout` applies only to the
definitions CDK builds itself)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from aws_cdk import RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.nag import acknowledge, wildcard_resource
from sagegate.workflows.definitions import definition_text


def state_machine(
    scope: Construct,
    name: str,
    *,
    prefix: str,
    substitutions: dict[str, str],
    log_retention: logs.RetentionDays,
    removal: RemovalPolicy,
) -> sfn.StateMachine:
    """`name` is the definition's file name (stepfunctions/<name>.asl.json)."""
    log_group = logs.LogGroup(scope, f"{name}Logs", retention=log_retention, removal_policy=removal)
    machine = sfn.StateMachine(
        scope,
        name,
        state_machine_name=machine_name(prefix, name),
        definition_body=sfn.DefinitionBody.from_file(str(_expanded(name))),
        definition_substitutions=substitutions,
        tracing_enabled=True,
        logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
    )
    acknowledge(
        machine.role,
        wildcard_resource("*"),
        "the state machine's own X-Ray tracing and CloudWatch Logs delivery: those actions have no resource scope",
    )
    return machine


def _expanded(name: str) -> Path:
    """The definition with its retriers expanded, as a file: CDK uploads it as an asset (a template
    holding the text would carry `${...}` outside Fn::Sub, which CloudFormation's linters refuse)."""
    folder = Path(tempfile.gettempdir()) / "sagegate-definitions"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}-{hashlib.sha256(definition_text(name).encode()).hexdigest()[:16]}.asl.json"
    if not path.exists():
        staging = path.with_suffix(f".{os.getpid()}.tmp")
        staging.write_text(definition_text(name))
        staging.replace(path)
    return path


def machine_name(prefix: str, name: str) -> str:
    return f"{prefix}-{name.replace('_', '-')}"


def pass_to_sagemaker(role: iam.IRole, sagemaker_role: iam.IRole) -> None:
    """The models and jobs a workflow creates run as the SageMaker role, and only SageMaker gets it."""
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["iam:PassRole"],
            resources=[sagemaker_role.role_arn],
            conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
        )
    )
