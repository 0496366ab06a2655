"""A variant's alarms: the gates of every rollout step (5XX rate, p99 model latency, and the gateway's
mean confidence when a floor is set). The CDK stacks create the same alarms for configured variants,
named by `alarm_name`, so a rollout can read and retire them."""

from __future__ import annotations

from typing import Any

from sagegate.deploy.policy import AlarmThresholds

__all__ = ["ALARM_KINDS", "alarm_name", "variant_alarms"]

ALARM_KINDS = ("errors", "latency", "quality")


def alarm_name(endpoint: str, variant: str, kind: str) -> str:
    """One name for a variant's alarm, shared by the CDK stacks and the workflow."""
    return f"{endpoint}-{variant}-{kind}"


def dimensions(endpoint: str, variant: str) -> list[dict[str, str]]:
    return [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}]


def _stat(metric_id: str, namespace: str, metric: str, dims: list[dict[str, str]], stat: str) -> dict[str, Any]:
    return {
        "Id": metric_id,
        "MetricStat": {
            "Metric": {"Namespace": namespace, "MetricName": metric, "Dimensions": dims},
            "Period": 60,
            "Stat": stat,
        },
    }


def variant_alarms(
    model: str, endpoint: str, variant: str, thresholds: AlarmThresholds, *, topic: str | None
) -> list[dict[str, Any]]:
    """PutMetricAlarm requests for one variant, all in the metric-query form, so that one workflow
    state creates any of them."""
    dims = dimensions(endpoint, variant)

    def alarm(
        kind: str, description: str, operator: str, threshold: float, metrics: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return {
            "AlarmName": alarm_name(endpoint, variant, kind),
            "AlarmDescription": description,
            "ComparisonOperator": operator,
            "Threshold": threshold,
            "EvaluationPeriods": 1,
            "DatapointsToAlarm": 1,
            "TreatMissingData": "notBreaching",
            "AlarmActions": [topic] if topic else [],
            "Metrics": metrics,
        }

    alarms = [
        alarm(
            "errors",
            f"{endpoint}/{variant}: 5XX answers above {thresholds.max_error_rate:.2%}",
            "GreaterThanThreshold",
            thresholds.max_error_rate,
            [
                {
                    "Id": "rate",
                    "Expression": f"IF(invocations >= {thresholds.min_requests}, errors / invocations, 0)",
                    "Label": "5XX rate",
                    "ReturnData": True,
                },
                {**_stat("errors", "AWS/SageMaker", "Invocation5XXErrors", dims, "Sum"), "ReturnData": False},
                {**_stat("invocations", "AWS/SageMaker", "Invocations", dims, "Sum"), "ReturnData": False},
            ],
        ),
        alarm(
            "latency",
            f"{endpoint}/{variant}: p99 model latency above {thresholds.max_p99_latency_ms:g} ms",
            "GreaterThanThreshold",
            thresholds.max_p99_latency_ms * 1000,  # ModelLatency is in microseconds
            [{**_stat("p99", "AWS/SageMaker", "ModelLatency", dims, "p99"), "ReturnData": True}],
        ),
    ]
    if thresholds.min_mean_confidence is not None:
        gateway_dims = [{"Name": "model", "Value": model}, {"Name": "variant", "Value": variant}]
        alarms.append(
            alarm(
                "quality",
                f"{model}/{variant}: mean confidence below {thresholds.min_mean_confidence:g} (gateway metric)",
                "LessThanThreshold",
                thresholds.min_mean_confidence,
                [{**_stat("confidence", "sagegate", "confidence", gateway_dims, "Average"), "ReturnData": True}],
            )
        )
    return alarms
