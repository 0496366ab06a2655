"""The environment's alarm topic (which this environment's CloudWatch alarms may publish to, through
its key) and its dashboard: per model and variant, latency p50/p99,
invocations and errors (SageMaker), cache hit rate and degraded answers (the gateway's EMF
metrics), GPU utilization, and the batch jobs' outcomes."""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.config import ModelConfig


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

    def add_models(self, models: list[ModelConfig], endpoints: dict[str, str]) -> None:
        """Per model, graphs of whatever variants its endpoint serves now: SEARCH expressions over the
        endpoint's metrics, not the configured variants (rollouts replace those; the dashboard is not
        redeployed for it)."""
        for model in models:
            endpoint = endpoints[model.name]
            title = f"{model.name} ({endpoint})"
            widgets: list[cloudwatch.IWidget] = [
                cloudwatch.GraphWidget(
                    title=f"{title}: model latency p50 and p99 per variant (us)",
                    left=[
                        _sagemaker("AWS/SageMaker", endpoint, "ModelLatency", "p50", "p50"),
                        _sagemaker("AWS/SageMaker", endpoint, "ModelLatency", "p99", "p99"),
                    ],
                ),
                cloudwatch.GraphWidget(
                    title=f"{title}: invocations and errors per variant",
                    left=[_sagemaker("AWS/SageMaker", endpoint, "Invocations", "Sum", "invocations")],
                    right=[
                        _sagemaker("AWS/SageMaker", endpoint, "Invocation4XXErrors", "Sum", "4XX"),
                        _sagemaker("AWS/SageMaker", endpoint, "Invocation5XXErrors", "Sum", "5XX"),
                    ],
                ),
                cloudwatch.GraphWidget(
                    title=f"{title}: gateway cache hits, misses and degraded answers per variant",
                    left=[_gateway(model.name, "cache_hits"), _gateway(model.name, "cache_misses")],
                    right=[_gateway(model.name, "degraded")],
                ),
            ]
            if model.first_gpus or any(v.gpus for v in model.variants):
                widgets.append(
                    cloudwatch.GraphWidget(
                        title=f"{title}: GPU utilization per variant (100 x GPUs at most)",
                        left=[_sagemaker("/aws/sagemaker/Endpoints", endpoint, "GPUUtilization", "Average", "GPU")],
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


def _search(schema: str, where: dict[str, str], metric: str, statistic: str, label: str) -> cloudwatch.MathExpression:
    """One line per metric of `schema` (namespace and dimensions) matching `where`: per variant,
    whichever variants the endpoint has when the graph is looked at."""
    matches = " ".join(f'{name}="{value}"' for name, value in where.items())
    return cloudwatch.MathExpression(
        expression=f"SEARCH('{{{schema}}} {matches} MetricName=\"{metric}\"', '{statistic}', 60)",
        label=label,
        period=Duration.minutes(1),
    )


def _sagemaker(namespace: str, endpoint: str, metric: str, statistic: str, label: str) -> cloudwatch.MathExpression:
    return _search(f"{namespace},EndpointName,VariantName", {"EndpointName": endpoint}, metric, statistic, label)


def _gateway(model: str, metric: str) -> cloudwatch.MathExpression:
    """The gateway's EMF metric (namespace sagegate, dimensions model, variant, service) per variant."""
    return _search("sagegate,model,service,variant", {"model": model, "service": "gateway"}, metric, "Sum", metric)
