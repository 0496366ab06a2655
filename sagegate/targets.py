"""Where CLI commands act: the local stack (default) or an AWS environment, by name.

`--target local` uses the project's state folder (`.sagegate/`, or SAGEGATE_HOME). `--target aws`
reads SAGEGATE_AWS_* variables; any other name is a profile in `sagegate.toml`:

    [profiles.prod]
    kind = "aws"
    region = "eu-west-1"
    bucket = "sagegate-prod-models"
    image_uri = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/sagegate-inference:1.4"
    api_url = "https://abc.execute-api.eu-west-1.amazonaws.com/prod"
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from sagegate.registry import LocalRegistry, RegistryError, RegistryProtocol

__all__ = ["Target", "open_registry", "resolve_target", "state_dir"]


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "local"
    kind: Literal["local", "aws"] = "local"
    region: str | None = None
    bucket: str | None = None
    image_uri: str | None = None
    kms_key_id: str | None = None
    api_url: str | None = None
    state_machine_arn: str | None = None


def state_dir() -> Path:
    return Path(os.environ.get("SAGEGATE_HOME", ".sagegate"))


def resolve_target(name: str | None) -> Target:
    name = name or os.environ.get("SAGEGATE_TARGET") or "local"
    if name == "local":
        return Target()
    if name == "aws":
        env = {
            k.removeprefix("SAGEGATE_AWS_").lower(): v
            for k, v in os.environ.items()
            if k.startswith("SAGEGATE_AWS_") and v
        }
        env.setdefault("region", os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "")
        return _target({"name": "aws", "kind": "aws", **{k: v for k, v in env.items() if v}}, "SAGEGATE_AWS_*")
    config = Path(os.environ.get("SAGEGATE_CONFIG", "sagegate.toml"))
    try:
        profiles = tomllib.loads(config.read_text()).get("profiles", {})
    except FileNotFoundError:
        raise RegistryError(f"unknown target {name!r}: there is no {config} with [profiles.{name}]") from None
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{config} is not valid TOML: {exc}") from None
    if name not in profiles:
        raise RegistryError(f"unknown target {name!r}: {config} has profiles {', '.join(sorted(profiles)) or 'none'}")
    return _target({"name": name, **profiles[name]}, f"[profiles.{name}] in {config}")


def _target(values: dict[str, object], where: str) -> Target:
    try:
        return Target.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise RegistryError(f"{where}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def open_registry(target: Target) -> RegistryProtocol:
    if target.kind == "local":
        return LocalRegistry(state_dir() / "registry")
    missing = [f for f in ("region", "bucket", "image_uri") if not getattr(target, f)]
    if missing:
        raise RegistryError(f"target {target.name!r} needs {', '.join(missing)} (SAGEGATE_AWS_* or a profile)")
    from botocore.session import get_session

    from sagegate.registry.sagemaker import SageMakerRegistry

    session = get_session()
    return SageMakerRegistry(
        session.create_client("sagemaker", region_name=target.region),
        session.create_client("s3", region_name=target.region),
        bucket=str(target.bucket),
        image_uri=str(target.image_uri),
        kms_key_id=target.kms_key_id,
    )
