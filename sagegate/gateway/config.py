"""Gateway settings, read once from the environment (SAGEGATE_GATEWAY_*)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["GatewaySettings"]

_PREFIX = "SAGEGATE_GATEWAY_"


class GatewaySettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    redis_url: str | None = Field(default=None, description="online features and prediction cache; none: off")
    redis_auth_secret_arn: str | None = Field(default=None, description="Secrets Manager secret: the Redis AUTH token")
    endpoint_url: str | None = Field(default=None, description="sagemaker-runtime URL (the local emulator)")
    region: str | None = None
    feature_budget_ms: float = Field(default=20.0, gt=0, description="time allowed for the feature store")
    cache_budget_ms: float = Field(default=20.0, gt=0, description="time allowed for one cache operation")
    singleflight_lock_ms: int = Field(default=2000, gt=0, description="expiry of a single-flight lock")
    singleflight_wait_ms: float = Field(default=1500.0, ge=0, description="how long a follower waits")
    stale_for_s: int = Field(default=86_400, ge=0, description="how long past its TTL a value may serve degraded")
    catalog_ttl_s: float = Field(default=30.0, ge=0, description="in-process cache of manifests and routes")
    invoke_timeout_ms: float = Field(
        default=100.0,
        gt=0,
        le=60_000,
        description="time for a model's endpoint call, retries included (routes may set their own)",
    )
    explain_timeout_ms: float = Field(
        default=1000.0,
        gt=0,
        le=60_000,
        description="at least this long for an endpoint call that explains (POST /v1/explain, explain: true)",
    )
    invoke_attempts: int = Field(
        default=2,
        ge=1,
        le=5,
        description="attempts per endpoint call at most; a retry only after a fast, retryable failure",
    )
    endpoint_connect_timeout_s: float = Field(default=1.0, gt=0, description="within the call's time")
    concurrency: int = Field(default=32, ge=1, description="predictions at work at once; the rest wait their turn")
    max_in_flight: int = Field(default=64, ge=1, description="endpoint calls open at once per variant (a bulkhead)")
    max_connections: int = Field(default=256, ge=1, description="the endpoint client's connection pool")
    max_body_bytes: int = Field(default=64 * 1024, gt=0)
    prediction_log_stream: str | None = Field(default=None, description="Firehose delivery stream")
    prediction_log_path: str | None = Field(default=None, description="JSON Lines file (local)")
    batch_state_machine_arn: str | None = Field(default=None, description="batch jobs run by Step Functions")
    batch_bucket: str | None = Field(default=None, description="the only bucket batch jobs may read and write")
    batch_instance_type: str = Field(default="ml.m5.xlarge", pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
    resource_prefix: str | None = Field(default=None, description="names of the SageMaker resources jobs create")
    flush_every_s: float = Field(
        default=0.0, ge=0, description="log and metrics flushed at most this often (0: after every request, as Lambda)"
    )
    sign_requests: bool = Field(default=True, description="SigV4-sign endpoint calls (the local emulator checks none)")
    api_key: str | None = Field(default=None, description="required in x-api-key on every /v1 request (local stack)")

    @classmethod
    def environment(cls, **values: str) -> dict[str, str]:
        """The environment variables that set these fields (the CDK stack builds the Lambda's from them)."""
        unknown = sorted(set(values) - set(cls.model_fields))
        if unknown:
            raise KeyError(f"GatewaySettings has no field {', '.join(unknown)}")
        return {f"{_PREFIX}{name.upper()}": value for name, value in values.items()}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewaySettings:
        env = os.environ if env is None else env
        values = {k[len(_PREFIX) :].lower(): v for k, v in env.items() if k.startswith(_PREFIX) and v != ""}
        values = {k: v for k, v in values.items() if k in cls.model_fields}
        if "region" not in values and env.get("AWS_REGION"):
            values["region"] = env["AWS_REGION"]
        return cls.model_validate(values)
