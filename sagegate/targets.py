"""Where CLI commands act: the local stack (default) or an AWS environment, by name.

`--target local` uses the project's state folder (`.sagegate/`, or SAGEGATE_HOME). `--target aws`
reads SAGEGATE_AWS_* variables; any other name is a profile in `sagegate.toml`:

    [profiles.prod]
    kind = "aws"
    region = "eu-west-1"
    bucket = "sagegate-prod-models"
    environment = "prod"
    api_url = "https://abc.execute-api.eu-west-1.amazonaws.com/prod"

A package's inference image is `image_uri` where it is set; otherwise the image the environment's
stack built and published in SSM (`image_parameter`: the GPU image for a package that serves on GPU
instances).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from sagegate.registry import LocalRegistry, RegistryError, RegistryProtocol

__all__ = ["Target", "image_parameter", "open_registry", "resolve_target", "state_dir"]


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "local"
    kind: Literal["local", "aws"] = "local"
    region: str | None = None
    bucket: str | None = None
    image_uri: str | None = None
    environment: str | None = None  # the stack's environment (cdk.json): where its images are published
    kms_key_id: str | None = None
    api_url: str | None = None
    state_machine_arn: str | None = None


def image_parameter(environment: str, image: str) -> str:
    """The SSM parameter holding the URI of an environment's image (inference, inference-gpu, batch),
    written by its stack (infra/stacks/sagegate_stack.py)."""
    return f"/sagegate/{environment}/images/{image}"


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


def open_registry(target: Target, *, gpu: bool = False) -> RegistryProtocol:
    """`gpu`: the packages registered serve on GPU instances (the environment's GPU image)."""
    if target.kind == "local":
        return LocalRegistry(state_dir() / "registry")
    missing = [f for f in ("region", "bucket") if not getattr(target, f)]
    if not target.image_uri and not target.environment:
        missing.append("image_uri or environment")
    if missing:
        raise RegistryError(f"target {target.name!r} needs {', '.join(missing)} (SAGEGATE_AWS_* or a profile)")
    from botocore.session import get_session

    from sagegate.registry.sagemaker import SageMakerRegistry

    session = get_session()
    image_uri = target.image_uri or published_image(
        session.create_client("ssm", region_name=target.region),
        str(target.environment),
        "inference-gpu" if gpu else "inference",
    )
    return SageMakerRegistry(
        session.create_client("sagemaker", region_name=target.region),
        session.create_client("s3", region_name=target.region),
        bucket=str(target.bucket),
        image_uri=image_uri,
        kms_key_id=target.kms_key_id,
    )


def published_image(ssm: Any, environment: str, image: str) -> str:
    """The URI an environment's stack published for `image` (the image built from this source)."""
    name = image_parameter(environment, image)
    try:
        return str(ssm.get_parameter(Name=name)["Parameter"]["Value"])
    except ssm.exceptions.ParameterNotFound:
        gpu = " (is a variant of that environment on a GPU instance type?)" if image.endswith("-gpu") else ""
        raise RegistryError(
            f"no image published at {name}: deploy environment {environment!r} first{gpu},"
            " or set SAGEGATE_AWS_IMAGE_URI"
        ) from None
