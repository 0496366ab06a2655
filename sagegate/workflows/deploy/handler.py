"""The deployment workflow's Lambda (functions/deploy/handler.py): one action per call.

`plan`, `check_smoke` are functions of their input (plus the manifest read from S3); `compare_shadow`
reads CloudWatch and the endpoint's data capture and writes its report to S3; `release_scaling` and
`apply_scaling` move Application Auto Scaling across the rollout. Everything else (SageMaker,
CloudWatch, DynamoDB and SNS calls, waits, retries, rollback) is in the state machine."""

from __future__ import annotations

import json
from typing import Any

from sagegate.registry.protocol import RegistryError
from sagegate.workflows.deploy.plan import DeploymentRefused, plan
from sagegate.workflows.deploy.scaling import apply_scaling, release_scaling
from sagegate.workflows.deploy.shadow import compare_shadow
from sagegate.workflows.deploy.smoke import check_smoke

__all__ = ["handle"]


def handle(event: dict[str, Any], *, clients: Any, settings: dict[str, str]) -> dict[str, Any]:
    """Dispatches one workflow action. Errors are raised with their class name as the workflow's error
    (Lambda reports it as errorType), so the state machine can catch them by name."""
    action = event.get("action")
    state = event.get("state", {})
    if action == "plan":

        def read_manifest(uri: str) -> dict[str, Any]:
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            body: dict[str, Any] = json.loads(clients.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            return body

        try:
            return plan(
                state,
                execution=str(event["execution"]),
                manifest_reader=read_manifest,
                kms_key=settings.get("kms_key", ""),
                topic=settings.get("topic") or None,
                capture=settings.get("capture_uri", ""),
            )
        except RegistryError as exc:  # from the route arithmetic
            raise DeploymentRefused(str(exc)) from None
    if action == "check_smoke":
        return check_smoke(state)
    if action == "compare_shadow":
        return compare_shadow(
            state, cloudwatch=clients.cloudwatch, s3=clients.s3, report_bucket=settings["report_bucket"]
        )
    if action == "release_scaling":
        return release_scaling(state, autoscaling=clients.autoscaling)
    if action == "apply_scaling":
        return apply_scaling(state, autoscaling=clients.autoscaling, sagemaker=clients.sagemaker)
    raise DeploymentRefused(f"unknown action {action!r}")
