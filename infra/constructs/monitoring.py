"""The environment's alarm topic (which this environment's CloudWatch alarms may publish to, through
its key) and its dashboard: per model and variant, latency p50/p99,
invocations and errors (SageMaker), cache hit rate and degraded answers (the gateway's EMF
metrics), GPU utilization, and the batch jobs' outcomes."""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.config import ModelConfig
from infra.constructs.serving import variant_metric


class Monitoring(Construct):
    def __init__(self, scope: Construct, id: str, *, prefix: str, key: kms.IKey, email: str | None) -> None:
        super().__init__(scope, id)
        self.topic = sns.Topic(self, "Alarms", topic_name=f"{prefix}-alarms", master_key=key, enforce_ssl=True)
        # CloudWatch publishes an alarm's notification as cloudwatch.amazonaws.com: the topic's policy (it
        # replaces the default one) must let it, for this environment's alarms (all named <prefix>-...), and
        # the key must let it encrypt the message (the statement AWS documents for an encrypted topic).
        alarms = iam.ServicePrincipal("cloudwatch.amazonaws.com")
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[alarms],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={
                    "ArnLike": {
                        "aws:SourceArn": Stack.of(self).format_arn(
                            service="cloudwatch",
                            resource="alarm",
                            resource_name=f"{prefix}-*",
                            arn_format=ArnFormat.COLON_RESOURCE_NAME,
                        )
                    }
                },
            )
        )
        key.add_to_resource_policy(
            iam.PolicyStatement(principals=[alarms], actions=["kms:Decrypt", "kms:GenerateDataKey*"], resources=["*"])
        )
        if email:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))
        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=prefix)

    def notify(self, alarms: list[cloudwatch.Alarm]) -> None:
        for alarm in alarms:
            alarm.add_alarm_action(actions.SnsAction(self.topic))

    def add_models(self, models: list[ModelConfig], endpoints: dict[str, str]) -> None:
        for model in models:
            endpoint = endpoints[model.name]
            for v in model.variants:
                title = f"{model.name} / {v.name}"
                gateway = {
                    name: cloudwatch.Metric(
                        namespace="sagegate",
                        metric_name=name,
                        statistic="Sum",
                        period=Duration.minutes(1),
                        dimensions_map={"model": model.name, "variant": v.name, "service": "gateway"},
                    )
                    for name in ("cache_hits", "cache_misses", "degraded")
                }
                hit_rate = cloudwatch.MathExpression(
                    expression="100 * hits / (hits + misses)",
                    label="cache hit rate %",
                    using_metrics={"hits": gateway["cache_hits"], "misses": gateway["cache_misses"]},
                    period=Duration.minutes(1),
                )
                widgets: list[cloudwatch.IWidget] = [
                    cloudwatch.GraphWidget(
                        title=f"{title}: model latency (us)",
                        left=[
                            variant_metric(endpoint, v.name, "ModelLatency", "p50"),
                            variant_metric(endpoint, v.name, "ModelLatency", "p99"),
                        ],
                    ),
                    cloudwatch.GraphWidget(
                        title=f"{title}: invocations and errors",
                        left=[
                            variant_metric(endpoint, v.name, "Invocations", "Sum"),
                        ],
                        right=[
                            variant_metric(endpoint, v.name, "Invocation4XXErrors", "Sum"),
                            variant_metric(endpoint, v.name, "Invocation5XXErrors", "Sum"),
                        ],
                    ),
                    cloudwatch.GraphWidget(
                        title=f"{title}: cache and degraded answers", left=[hit_rate], right=[gateway["degraded"]]
                    ),
                ]
                if v.gpus:
                    widgets.append(
                        cloudwatch.GraphWidget(
                            title=f"{title}: GPU utilization (100 x {v.gpus} GPUs at most)",
                            left=[variant_metric(endpoint, v.name, "GPUUtilization", "Average")],
                        )
                    )
                self.dashboard.add_widgets(*widgets)

    def add_batch(self, machine: sfn.StateMachine) -> None:
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="batch jobs",
                left=[machine.metric_succeeded(), machine.metric_failed(), machine.metric_started()],
            )
        )
