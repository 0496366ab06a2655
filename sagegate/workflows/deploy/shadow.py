"""The shadow comparison: latency, 5XX rate and prediction agreement of a shadow variant against
production over the time it mirrored traffic (CloudWatch for the metrics, the endpoint's data capture
for the answers, matched by inference id), written to S3 as a report."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sagegate.workflows.deploy.alarms import dimensions
from sagegate.workflows.names import short_hash

__all__ = ["compare_shadow"]


def _metric_summary(cloudwatch: Any, endpoint: str, variant: str, start: datetime, end: datetime) -> dict[str, Any]:
    period = max(60, int((end - start).total_seconds()) // 60 * 60)
    queries = [
        ("invocations", "Invocations", "Sum"),
        ("errors", "Invocation5XXErrors", "Sum"),
        ("latency_p50_us", "ModelLatency", "p50"),
        ("latency_p99_us", "ModelLatency", "p99"),
    ]
    answer = cloudwatch.get_metric_data(
        MetricDataQueries=[
            {
                "Id": metric_id.replace("_", ""),
                "MetricStat": {
                    "Metric": {
                        "Namespace": "AWS/SageMaker",
                        "MetricName": metric,
                        "Dimensions": dimensions(endpoint, variant),
                    },
                    "Period": period,
                    "Stat": stat,
                },
            }
            for metric_id, metric, stat in queries
        ],
        StartTime=start,
        EndTime=end,
    )
    by_id = {r["Id"]: r.get("Values", []) for r in answer["MetricDataResults"]}
    summary: dict[str, Any] = {}
    for metric_id, _, stat in queries:
        values = by_id.get(metric_id.replace("_", ""), [])
        summary[metric_id] = (sum(values) if stat == "Sum" else max(values)) if values else None
    invocations, errors = summary["invocations"], summary["errors"]
    summary["error_rate"] = (errors or 0) / invocations if invocations else None
    return summary


def _captured(s3: Any, uri: str, endpoint: str, variant: str, *, since: datetime, limit: int) -> dict[str, Any]:
    """Captured answers of one variant since `since`, keyed by inference id (or the request's hash)."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    prefix = f"{prefix.strip('/')}/{endpoint}/{variant}/".lstrip("/")
    found: dict[str, Any] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["LastModified"] < since:
                continue
            for line in s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode().splitlines():
                if not line.strip():
                    continue
                record = json.loads(line)
                data = record["captureData"]
                key = (
                    record.get("eventMetadata", {}).get("inferenceId")
                    or hashlib.sha256(data["endpointInput"]["data"].encode()).hexdigest()
                )
                found[key] = _labels(data["endpointOutput"])
                if len(found) >= limit:
                    return found
    return found


def _labels(output: dict[str, Any]) -> list[Any]:
    raw = output["data"]
    if output.get("encoding") == "BASE64":
        raw = base64.b64decode(raw).decode()
    answer = json.loads(raw)
    return [p.get("label", p.get("prediction")) for p in answer.get("predictions", [])]


def compare_shadow(
    state: dict[str, Any], *, cloudwatch: Any, s3: Any, report_bucket: str, now: datetime | None = None
) -> dict[str, Any]:
    """Latency, errors and prediction agreement of the shadow variant against production, over the
    time it mirrored traffic; written to S3 and returned."""
    plan_ = state["plan"]
    endpoint, shadow = plan_["endpoint"], plan_["variant"]
    end = now or datetime.now(UTC)
    seconds = int(state["input"].get("shadow_seconds", 3600))
    start = end - timedelta(seconds=max(seconds, 60))
    variants = {v: _metric_summary(cloudwatch, endpoint, v, start, end) for v in plan_["production_variants"]}
    variants[shadow] = _metric_summary(cloudwatch, endpoint, shadow, start, end)
    capture = plan_["config"].get("DataCaptureConfig", {})
    agreement: dict[str, Any] = {"compared": 0, "agreeing": 0, "rate": None}
    if capture.get("EnableCapture"):
        shadow_answers = _captured(s3, capture["DestinationS3Uri"], endpoint, shadow, since=start, limit=50_000)
        for production in plan_["production_variants"]:
            answers = _captured(s3, capture["DestinationS3Uri"], endpoint, production, since=start, limit=50_000)
            for key, labels in answers.items():
                if key in shadow_answers:
                    agreement["compared"] += 1
                    agreement["agreeing"] += int(shadow_answers[key] == labels)
        if agreement["compared"]:
            agreement["rate"] = agreement["agreeing"] / agreement["compared"]
    model, version = state["input"]["model"], state["input"]["version"]
    report = {
        "model": model,
        "version": version,
        "endpoint": endpoint,
        "shadow_variant": shadow,
        "window": {"start": start.isoformat(), "end": end.isoformat()},
        "variants": variants,
        "agreement": agreement,
    }
    key = f"shadow-reports/{model}/v{version}/{short_hash(json.dumps(report['window']))}.json"
    s3.put_object(
        Bucket=report_bucket, Key=key, Body=json.dumps(report, indent=2).encode(), ContentType="application/json"
    )
    report["uri"] = f"s3://{report_bucket}/{key}"
    return report
