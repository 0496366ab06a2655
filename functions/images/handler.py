"""Lambda entry points of the image build custom resource (sagegate.workflows.images): the provider
framework calls `on_event` once per CloudFormation request and `is_complete` until the build ends."""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools import Logger
from botocore.config import Config

from sagegate.workflows import images

logger = Logger(service="sagegate-images")
_config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=30)
codebuild = boto3.client("codebuild", config=_config)
ecr = boto3.client("ecr", config=_config)


@logger.inject_lambda_context(clear_state=True)
def on_event(event: dict[str, Any], context: Any) -> dict[str, Any]:
    logger.info("image", extra={"request": event["RequestType"], "properties": event.get("ResourceProperties")})
    return images.on_event(event, codebuild=codebuild, ecr=ecr)


@logger.inject_lambda_context(clear_state=True)
def is_complete(event: dict[str, Any], context: Any) -> dict[str, Any]:
    answer = images.is_complete(event, codebuild=codebuild)
    logger.info("build", extra={"build": event.get("BuildId"), "complete": answer["IsComplete"]})
    return answer
