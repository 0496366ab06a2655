"""The model registry: SageMaker Model Registry in AWS, SQLite and files locally."""

from __future__ import annotations

from sagegate.registry.local import LocalRegistry
from sagegate.registry.protocol import (
    ApprovalStatus,
    ModelVersion,
    RegistryError,
    RegistryProtocol,
    Stage,
    VersionNotFound,
    chosen_version,
)

__all__ = [
    "ApprovalStatus",
    "LocalRegistry",
    "ModelVersion",
    "RegistryError",
    "RegistryProtocol",
    "Stage",
    "VersionNotFound",
    "chosen_version",
]
