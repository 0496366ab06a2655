"""Lambda entry point of the monitoring workflow's logic (sagegate.workflows.monitor), in the monitor
container image (containers/monitor: fairlearn and plotly do not fit a zip bundle). Clients are
created once per execution environment; settings come from the environment the CDK stack sets."""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from botocore.config import Config

from sagegate.registry.sagemaker import SageMakerRegistry
from sagegate.workflows.monitor import MonitorSettings, handle

logger = Logger(service="sagegate-monitor")
_config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=30)
_s3 = boto3.client("s3", config=_config)
clients = SimpleNamespace(
    s3=_s3,
    athena=boto3.client("athena", config=_config),
    cloudwatch=boto3.client("cloudwatch", config=_config),
    registry=SageMakerRegistry(
        boto3.client("sagemaker", config=_config),
        _s3,
        bucket=os.environ.get("SAGEGATE_REGISTRY_BUCKET", ""),
        image_uri="",  # the workflow only reads
        owner=os.environ.get("SAGEGATE_REGISTRY_ACCOUNT") or None,
        models=[m for m in os.environ.get("SAGEGATE_REGISTRY_MODELS", "").split(",") if m],
    ),
)
settings = MonitorSettings(
    database=os.environ.get("SAGEGATE_MONITOR_DATABASE", ""),
    table=os.environ.get("SAGEGATE_MONITOR_TABLE", ""),
    reports_bucket=os.environ.get("SAGEGATE_MONITOR_REPORTS_BUCKET", ""),
    workgroup=os.environ.get("SAGEGATE_MONITOR_WORKGROUP", "primary"),
)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    logger.info("monitoring step", extra={"model": event.get("model"), "phase": (event.get("step") or {}).get("phase")})
    return handle(event, clients=clients, settings=settings)
