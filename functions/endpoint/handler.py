"""Lambda entry points of the endpoint custom resource (sagegate.workflows.deploy.endpoint), called
by the CDK provider framework: `on_event` once per CloudFormation request, `is_complete` until done."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from botocore.config import Config

from sagegate.workflows.deploy import endpoint

logger = Logger(service="sagegate-endpoint")
_config = Config(retries={"mode": "standard", "max_attempts": 8}, connect_timeout=5, read_timeout=30)
clients = SimpleNamespace(
    sagemaker=boto3.client("sagemaker", config=_config),
    autoscaling=boto3.client("application-autoscaling", config=_config),
    cloudwatch=boto3.client("cloudwatch", config=_config),
    sfn=boto3.client("stepfunctions", config=_config),
    dynamodb=boto3.client("dynamodb", config=_config),
)


@logger.inject_lambda_context(clear_state=True)
def on_event(event: dict[str, Any], context: Any) -> dict[str, Any]:
    logger.info("endpoint request", extra={"request": event.get("RequestType"), "id": event.get("LogicalResourceId")})
    return endpoint.on_event(event, clients=clients)


@logger.inject_lambda_context(clear_state=True)
def is_complete(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return endpoint.is_complete(event, clients=clients)
