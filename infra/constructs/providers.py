"""Custom resources with a wait: our two handlers (`on_event`, `is_complete`) behind CDK's provider
framework (aws_cdk.custom_resources.Provider), whose waiter state machine calls `is_complete` on a
schedule. The framework's own functions get roles written out here (CDK's have a managed policy)
and one log group; the waiter logs every event (without execution data). What is CDK's and cannot
be scoped further is acknowledged (cdk-nag) and skipped (checkov) here, with the reason."""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, RemovalPolicy, custom_resources
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.constructs.functions import python_function
from infra.nag import acknowledge, attribute, skip_check, wildcard_resource

__all__ = ["handler_pair", "waiting_provider"]


def handler_pair(
    scope: Construct,
    id: str,
    *,
    module: str,
    code: lambda_.Code,
    timeout: Duration,
    log_retention: logs.RetentionDays,
    removal: RemovalPolicy,
    **options: Any,
) -> tuple[lambda_.Function, lambda_.Function]:
    """The `on_event` and `is_complete` functions of a handler module of the bundle (`<id>OnEvent`,
    `<id>IsComplete`), each with its own role: grant each what it calls."""
    on_event, is_complete = (
        python_function(
            scope,
            id + step.title().replace("_", ""),
            handler=f"{module}.{step}",
            code=code,
            log_retention=log_retention,
            removal=removal,
            memory_size=256,
            timeout=timeout,
            **options,
        )
        for step in ("on_event", "is_complete")
    )
    return on_event, is_complete


def waiting_provider(
    scope: Construct,
    id: str,
    *,
    prefix: str,
    what: str,
    on_event: lambda_.Function,
    is_complete: lambda_.Function,
    total_timeout: Duration,
    log_retention: logs.RetentionDays,
    removal: RemovalPolicy,
) -> custom_resources.Provider:
    framework_logs = logs.LogGroup(scope, f"{id}Logs", retention=log_retention, removal_policy=removal)
    roles: dict[str, iam.Role] = {}
    for step in ("OnEvent", "CompleteAndTimeout"):  # written out: CDK's own have a managed policy
        roles[step] = iam.Role(
            scope,
            f"{id}Framework{step}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{prefix}: CDK's provider framework of {what} ({step})",
        )
        roles[step].add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"], resources=[framework_logs.log_group_arn]
            )
        )
    provider = custom_resources.Provider(
        scope,
        id,
        on_event_handler=on_event,
        is_complete_handler=is_complete,
        query_interval=Duration.seconds(30),
        total_timeout=total_timeout,
        framework_on_event_role=roles["OnEvent"],
        framework_complete_and_timeout_role=roles["CompleteAndTimeout"],
        log_group=framework_logs,
        disable_waiter_state_machine_logging=False,
        waiter_state_machine_log_options=custom_resources.LogOptions(
            destination=logs.LogGroup(scope, f"{id}WaiterLogs", retention=log_retention, removal_policy=removal),
            level=sfn.LogLevel.ALL,
            include_execution_data=False,
        ),
    )
    _acknowledge(provider, [*roles.values()], [on_event, is_complete])
    return provider


def _acknowledge(provider: Construct, roles: list[iam.Role], handlers: list[lambda_.Function]) -> None:
    framework = [provider.node.find_child(f"framework-{step}") for step in ("onEvent", "isComplete", "onTimeout")]
    why = "the provider framework invokes these functions only, and CDK's grant_invoke names their versions too"
    for holders, invoked in ((roles, handlers), ([provider], framework[1:])):  # the provider holds its waiter
        for holder in holders:
            for function in invoked:
                acknowledge(holder, wildcard_resource(attribute(function, ":*")), why)
    waiter = provider.node.find_child("waiter-state-machine")
    acknowledge(
        waiter,
        wildcard_resource("*"),
        "Step Functions' log delivery actions (logs:CreateLogDelivery, PutResourcePolicy, ...) have no"
        " resource-level scope; CDK grants them to a state machine that logs",
    )
    acknowledge(
        waiter,
        "SF2",
        "CDK's provider waiter only calls is_complete on a schedule and has no X-Ray option; it logs every"
        " event, and both handlers log every call",
    )
    skip_check(
        waiter.node.find_child("Role").node.find_child("DefaultPolicy"),
        "CKV_AWS_111",
        "CDK's waiter role: Step Functions' log delivery actions, which have no resource-level scope, and the"
        " invocation of this provider's own functions",
    )
    for function in [*handlers, *framework]:
        skip_check(
            function,
            "CKV_AWS_116",
            "invoked by CloudFormation's custom resource protocol (and the provider's waiter), which fails the"
            " stack operation when no answer comes: an event cannot be lost silently",
        )
        skip_check(
            function,
            "CKV_AWS_117",
            "it calls AWS APIs only and reaches nothing in the VPC; in it, it would need an interface endpoint"
            " per service for no isolation gained",
        )
