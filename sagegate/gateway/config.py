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
    endpoint_connect_timeout_s: float = Field(default=1.0, gt=0)
    endpoint_read_timeout_s: float = Field(default=2.0, gt=0)
    endpoint_max_attempts: int = Field(default=2, ge=1)
    max_body_bytes: int = Field(default=64 * 1024, gt=0)
    prediction_log_stream: str | None = Field(default=None, description="Firehose delivery stream")
    prediction_log_path: str | None = Field(default=None, description="JSON Lines file (local)")
    batch_state_machine_arn: str | None = Field(default=None, description="batch jobs run by Step Functions")
    batch_bucket: str | None = Field(default=None, description="the only bucket batch jobs may read and write")
    batch_instance_type: str = Field(default="ml.m5.xlarge", pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
    resource_prefix: str | None = Field(default=None, description="names of the SageMaker resources jobs create")
    inline_handlers: bool = Field(
        default_factory=lambda: bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME")),
        description="run routes on the event loop (Lambda: one request per environment at a time)",
    )

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
