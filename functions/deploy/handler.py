"""Lambda entry point of the deployment workflow's logic (sagegate.workflows.deploy): plan,
check_smoke, compare_shadow, release_scaling, apply_scaling. Clients are created once per
execution environment; settings come from the environment the CDK stack sets."""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from botocore.config import Config

from sagegate.workflows.deploy import handle

logger = Logger(service="sagegate-deploy")
_config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=30)
clients = SimpleNamespace(
    s3=boto3.client("s3", config=_config),
    cloudwatch=boto3.client("cloudwatch", config=_config),
    sagemaker=boto3.client("sagemaker", config=_config),
    autoscaling=boto3.client("application-autoscaling", config=_config),
)
settings = {
    "kms_key": os.environ.get("SAGEGATE_KMS_KEY_ARN", ""),
    "topic": os.environ.get("SAGEGATE_TOPIC_ARN", ""),
    "report_bucket": os.environ.get("SAGEGATE_REPORT_BUCKET", ""),
    "capture_uri": os.environ.get("SAGEGATE_CAPTURE_URI", ""),
}


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    logger.info("workflow action", extra={"action": event.get("action"), "execution": event.get("execution")})
    return handle(event, clients=clients, settings=settings)
