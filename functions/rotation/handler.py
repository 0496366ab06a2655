"""Lambda entry point of the cache's AUTH token rotation (sagegate.cache_auth), invoked by Secrets
Manager once per step. Runs in the VPC beside the cache, which it must reach to test a token."""

from __future__ import annotations

import os
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from botocore.config import Config

from sagegate.cache_auth import CacheTokenRotation

logger = Logger(service="sagegate-cache-rotation")
_config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=30)
rotation = CacheTokenRotation(
    secrets=boto3.client("secretsmanager", config=_config),
    elasticache=boto3.client("elasticache", config=_config),
    replication_group=os.environ.get("SAGEGATE_CACHE_REPLICATION_GROUP", ""),
)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> None:
    logger.info("rotation step", extra={"step": event.get("Step"), "secret": event.get("SecretId")})
    # Leave time to report a failure rather than be cut off by the Lambda's own timeout.
    deadline = context.get_remaining_time_in_millis() / 1000 - 20
    rotation.run(event["Step"], event["SecretId"], event["ClientRequestToken"], deadline_s=max(deadline, 0))
