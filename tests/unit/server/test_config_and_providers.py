from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from sagegate.server.config import ServerConfig
from sagegate.server.providers import choose_providers


def test_real_time_defaults_follow_the_sagemaker_contract() -> None:
    config = ServerConfig.from_env({"SAGEMAKER_BIND_TO_PORT": "9090"})
    assert (config.port, config.model_dir) == (9090, Path("/opt/ml/model"))
    assert (config.max_batch_size, config.max_delay_ms, config.max_body_mb) == (32, 10.0, 6.0)
    assert not config.batch_transform


def test_batch_transform_raises_the_payload_limit() -> None:
    config = ServerConfig.from_env({"SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "50"})
    assert config.batch_transform
    assert config.max_body_bytes == 50 * 1024 * 1024
    assert config.max_records > 1_000_000


def test_sagegate_variables_and_overrides() -> None:
    env = {"SAGEGATE_MAX_BATCH_SIZE": "64", "SAGEGATE_PROVIDERS": "CUDA, cpu", "SAGEGATE_WARMUP": "false"}
    config = ServerConfig.from_env(env, overrides={"max_delay_ms": 2.5})
    assert (config.max_batch_size, config.providers, config.warmup, config.max_delay_ms) == (
        64,
        ("cuda", "cpu"),
        False,
        2.5,
    )
    with pytest.raises(ValidationError, match="max_batch_size"):
        ServerConfig.from_env({"SAGEGATE_MAX_BATCH_SIZE": "0"})


def test_providers_keep_the_requested_order_of_what_is_installed() -> None:
    installed = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(["tensorrt", "cuda", "cpu"], installed) == installed
    assert choose_providers(["tensorrt"], installed) == ["CPUExecutionProvider"]
    assert choose_providers(["cpu", "cuda"], installed) == ["CPUExecutionProvider", "CUDAExecutionProvider"]
    with pytest.raises(ValueError, match="unknown execution provider 'rocm'"):
        choose_providers(["rocm"], installed)
