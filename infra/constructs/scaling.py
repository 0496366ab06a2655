"""What a Lambda needs to move SageMaker variants in and out of Application Auto Scaling
(sagegate.workflows.deploy.scaling across a rollout, sagegate.workflows.deploy.endpoint when an
endpoint is first created): the scaling actions, the SageMaker actions the caller of
RegisterScalableTarget needs too, the target-tracking alarms, and the service-linked role."""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_

from infra.nag import acknowledge, arn, policy_holder, wildcard_resource

__all__ = ["grant_scaling"]

_SCALING_READS = ["application-autoscaling:DescribeScalableTargets", "application-autoscaling:DescribeScalingPolicies"]
_SCALING_SERVICE = "sagemaker.application-autoscaling.amazonaws.com"


def grant_scaling(function: lambda_.Function, prefix: str, *, register: bool = True, deregister: bool = True) -> None:
    """What moving variants needs: `register` (targets and policies put on variants), `deregister`
    (taken off them), or both (a rollout's hand-over)."""
    stack = Stack.of(function)
    changes = [
        *(
            ["application-autoscaling:RegisterScalableTarget", "application-autoscaling:PutScalingPolicy"]
            if register
            else []
        ),
        *(
            ["application-autoscaling:DeregisterScalableTarget", "application-autoscaling:DeleteScalingPolicy"]
            if deregister
            else []
        ),
    ]
    alarm_actions = [
        *(["cloudwatch:DescribeAlarms", "cloudwatch:PutMetricAlarm"] if register else []),
        *(["cloudwatch:DeleteAlarms"] if deregister else []),
    ]

    def sagemaker(kind: str) -> str:
        return stack.format_arn(service="sagemaker", resource=kind, resource_name=f"{prefix}-*")

    if register:
        # Registering a SageMaker variant with Application Auto Scaling needs these on the caller too
        # (SageMaker developer guide, "Auto scaling prerequisites").
        function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["sagemaker:DescribeEndpoint", "sagemaker:UpdateEndpointWeightsAndCapacities"],
                resources=[sagemaker("endpoint")],
            )
        )
        function.add_to_role_policy(
            iam.PolicyStatement(actions=["sagemaker:DescribeEndpointConfig"], resources=[sagemaker("endpoint-config")])
        )
    function.add_to_role_policy(iam.PolicyStatement(actions=_SCALING_READS, resources=["*"]))
    # No resource scope for a target before it exists: the changes are held to SageMaker variants by condition.
    function.add_to_role_policy(
        iam.PolicyStatement(
            actions=changes,
            resources=["*"],
            conditions={
                "StringEquals": {
                    "application-autoscaling:service-namespace": "sagemaker",
                    "application-autoscaling:scalable-dimension": "sagemaker:variant:DesiredInstanceCount",
                }
            },
        )
    )
    # Target tracking policies are CloudWatch alarms that Application Auto Scaling makes in the caller's name.
    function.add_to_role_policy(
        iam.PolicyStatement(
            actions=alarm_actions,
            resources=[
                stack.format_arn(
                    service="cloudwatch",
                    resource="alarm",
                    resource_name="TargetTracking-endpoint/*",
                    arn_format=ArnFormat.COLON_RESOURCE_NAME,
                )
            ],
        )
    )
    linked = "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
    if not register:  # the service-linked role is made by the first registration
        _acknowledge(function, prefix)
        return
    function.add_to_role_policy(
        iam.PolicyStatement(
            actions=["iam:CreateServiceLinkedRole"],
            resources=[
                stack.format_arn(
                    service="iam",
                    region="",
                    resource="role",
                    resource_name=f"aws-service-role/{_SCALING_SERVICE}/{linked}",
                )
            ],
            conditions={"StringLike": {"iam:AWSServiceName": _SCALING_SERVICE}},
        )
    )
    _acknowledge(function, prefix)


def _acknowledge(function: lambda_.Function, prefix: str) -> None:
    holder = policy_holder(function)
    acknowledge(
        holder,
        wildcard_resource("*"),
        "Application Auto Scaling's target and policy actions have no resource-level scope before a target"
        " exists; the changes are held to SageMaker variants by condition",
    )
    for name in (f"endpoint/{prefix}-*", f"endpoint-config/{prefix}-*"):
        acknowledge(
            holder,
            wildcard_resource(arn(function, "sagemaker", name)),
            "the endpoints (and their configs) of this environment, named by its prefix, including models"
            " configured later",
        )
    acknowledge(
        holder,
        wildcard_resource(arn(function, "cloudwatch", "alarm:TargetTracking-endpoint/*")),
        "the alarms Application Auto Scaling names for target tracking on SageMaker variants",
    )
