"""The model registry: versions of each model, their artifacts, approval and stage."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from sagegate.manifest import ModelManifest

__all__ = [
    "ApprovalStatus",
    "ModelVersion",
    "RegistryError",
    "RegistryProtocol",
    "Stage",
    "VersionNotFound",
    "chosen_version",
]


class ApprovalStatus(StrEnum):
    PENDING = "PendingManualApproval"
    APPROVED = "Approved"
    REJECTED = "Rejected"


class Stage(StrEnum):
    DEV = "dev"
    STAGING = "staging"
    PRODUCTION = "production"


class ModelVersion(BaseModel):
    """One registered version: the manifest (its `version` is the registry's number) and its state."""

    model_config = ConfigDict(frozen=True)

    model: str
    version: str
    status: ApprovalStatus
    stage: Stage
    sha256: str  # of model.onnx, checked at registration and by the server
    archive_sha256: str
    artifact_uri: str  # model.tar.gz: a file path locally, an S3 URI in AWS
    manifest: ModelManifest
    created_at: datetime
    decided_by: str | None = None
    decision_reason: str | None = None
    arn: str | None = None

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "model": self.model,
            "version": self.version,
            "status": self.status.value,
            "stage": self.stage.value,
            "framework": m.framework.value,
            "task": m.outputs.task.value,
            "metrics": m.metrics,
            "sha256": self.sha256,
            "created_at": self.created_at.isoformat(),
            "decided_by": self.decided_by,
        }


def chosen_version(versions: Sequence[ModelVersion], wanted: str | None = None) -> ModelVersion | None:
    """The version a job runs (`sagegate batch`, `/v1/batch_predict`): the one named, whatever its
    status, else the latest Approved one."""
    if wanted is not None:
        return next((v for v in versions if v.version == wanted), None)
    approved = [v for v in versions if v.status is ApprovalStatus.APPROVED]
    return max(approved, key=lambda v: _number(v.version)) if approved else None


def _number(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)


class RegistryError(Exception):
    """A registry operation that cannot be done; the message is one line for the CLI."""


class VersionNotFound(RegistryError):
    pass


class RegistryProtocol(Protocol):
    def register(self, package: Path, *, stage: Stage = Stage.DEV) -> tuple[ModelVersion, bool]:
        """Stores the package's artifact and numbers it; (version, False) if this artifact is already in."""
        ...

    def models(self) -> list[str]: ...

    def versions(self, model: str) -> list[ModelVersion]: ...

    def get(self, model: str, version: str) -> ModelVersion: ...

    def approve(self, model: str, version: str, *, by: str, reason: str | None = None) -> ModelVersion: ...

    def reject(self, model: str, version: str, *, by: str, reason: str) -> ModelVersion: ...

    def set_stage(self, model: str, version: str, stage: Stage) -> ModelVersion: ...
