"""Server settings, read once from the environment (the SageMaker contract's variables first)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ServerConfig", "default_memory_budget_mb"]

MB = 1024 * 1024


def default_memory_budget_mb() -> int:
    """75% of the container's memory limit (cgroup v2), or of the machine's memory."""
    limit = None
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        limit = int(text) if text.isdigit() else None
    except OSError:
        pass
    if limit is None:
        limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(limit * 0.75 / MB)


class ServerConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model_dir: Path = Path("/opt/ml/model")
    # Loopback unless told: the container image sets SAGEGATE_HOST=0.0.0.0, as SageMaker requires.
    host: str = "127.0.0.1"
    port: int = 8080
    grpc_port: int = Field(
        default=0, ge=0, le=65535, description="OIP v2 gRPC on this port (0: off; the container image serves 8081)"
    )
    workers: int = Field(
        default=0,
        ge=0,
        description="server processes sharing the ports, each with its models (0: one per CPU the container may use)",
    )
    multi_model: bool = Field(
        default=False, description="the multi-model API (POST /models, DELETE /models/NAME) is served"
    )
    models_root: Path = Field(
        default=Path("/opt/ml/models"), description="multi-model mode: where POST /models may load packages from"
    )
    max_batch_size: int = Field(default=32, ge=1)
    max_delay_ms: float = Field(default=10.0, ge=0)
    batch_workers: int = Field(default=1, ge=1, description="concurrent batches per model")
    inline_below_ms: float = Field(
        default=0.5,
        ge=0,
        description="batches that run faster than this (moving average) run on the event loop: "
        "a thread hand-off would cost more than the model",
    )
    max_records: int = Field(default=1000, ge=1, description="records per real-time request")
    max_body_mb: float = Field(default=6.0, gt=0)
    batch_transform: bool = False
    providers: tuple[str, ...] = ("tensorrt", "cuda", "cpu")
    intra_op_threads: int = Field(default=0, ge=0, description="0: ONNX Runtime's default")
    inter_op_threads: int = Field(default=0, ge=0)
    spinning: bool = Field(default=True, description="ONNX Runtime threads busy-wait between runs (off: they sleep)")
    memory_budget_mb: int = Field(default_factory=default_memory_budget_mb, ge=1)
    warmup: bool = True
    request_timeout_s: float = Field(default=60.0, gt=0)
    log_level: str = "info"

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * MB)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, overrides: Mapping[str, object] | None = None
    ) -> ServerConfig:
        env = os.environ if env is None else env
        values: dict[str, object] = {}

        def take(key: str, field: str) -> None:
            if env.get(key, "") != "":
                values[field] = env[key]

        take("SAGEMAKER_BIND_TO_PORT", "port")
        take("SAGEMAKER_MODEL_SERVER_WORKERS", "workers")  # what SageMaker's own serving stacks read
        batch = env.get("SAGEMAKER_BATCH", "").lower() == "true"
        if batch:
            # Batch Transform: large MULTI_RECORD payloads, no per-request record cap.
            values.update(batch_transform=True, max_body_mb=100.0, max_records=10_000_000, max_batch_size=1024)
            take("SAGEMAKER_MAX_PAYLOAD_IN_MB", "max_body_mb")
        for field in cls.model_fields:
            take(f"SAGEGATE_{field.upper()}", field)
        if isinstance(values.get("providers"), str):
            values["providers"] = tuple(p.strip().lower() for p in str(values["providers"]).split(",") if p.strip())
        values.update(overrides or {})
        return cls.model_validate(values)
