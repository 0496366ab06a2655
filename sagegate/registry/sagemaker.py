"""The registry in AWS: SageMaker Model Registry, one model package group per model.

Each version is a model package whose artifact (model.tar.gz) and manifest live in S3 under a
content-addressed prefix (`s3://BUCKET/PREFIX/MODEL/SHA256/`), so uploading twice writes the same
objects. SageMaker numbers the versions (ModelPackageVersion) itself, atomically. What sagegate
needs beyond SageMaker's fields (sha256, stage, who decided, the manifest's S3 URI) is kept in
CustomerMetadataProperties; every update sends the whole merged set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sagegate.manifest import MANIFEST_FILE, ModelManifest
from sagegate.packaging.archive import ARCHIVE_FILE, sha256_file, write_archive
from sagegate.registry.package_reader import checked_package
from sagegate.registry.protocol import ApprovalStatus, ModelVersion, RegistryError, Stage, VersionNotFound

__all__ = ["DEFAULT_PREFIX", "SageMakerRegistry"]

_CONTENT_TYPES = ["application/json", "application/jsonlines", "text/csv", "application/x-npy"]


DEFAULT_PREFIX = "models"  # where packages land in the artifacts bucket (the stack grants reads under it)


class SageMakerRegistry:
    def __init__(
        self,
        sagemaker: Any,
        s3: Any,
        *,
        bucket: str,
        image_uri: str,
        prefix: str = DEFAULT_PREFIX,
        kms_key_id: str | None = None,
        owner: str | None = None,
        models: Sequence[str] = (),
    ) -> None:
        """`owner`: the account of a registry read from another account (the caller's own by
        default). Its groups are then named by ARN, and its models are `models`: ListModelPackageGroups
        lists the caller's own account only."""
        self._sm = sagemaker
        self._s3 = s3
        self._owner = owner
        self._models = sorted(models)
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.image_uri = image_uri
        self._kms = kms_key_id

    # -- writes ---------------------------------------------------------------------------------

    def register(self, package: Path, *, stage: Stage = Stage.DEV) -> tuple[ModelVersion, bool]:
        with checked_package(package) as (folder, manifest):
            self._ensure_group(manifest)
            existing = self._find_by_sha(manifest.name, manifest.sha256)
            if existing is not None:
                return existing, False
            key = f"{self.prefix}/{manifest.name}/{manifest.sha256}"
            if not (folder / ARCHIVE_FILE).exists():
                write_archive(folder, extra=list(manifest.extra_files))
            archive_sha = sha256_file(folder / ARCHIVE_FILE)
            self._put(folder / ARCHIVE_FILE, f"{key}/{ARCHIVE_FILE}")
            self._put(folder / MANIFEST_FILE, f"{key}/{MANIFEST_FILE}")
            if (baseline := _baseline_file(manifest)) is not None:  # what the monitoring workflow reads
                self._put(folder / baseline, f"{key}/{baseline}")
            answer = self._sm.create_model_package(
                ModelPackageGroupName=manifest.name,
                ModelPackageDescription=(manifest.description or f"{manifest.name} ({manifest.framework})")[:1000],
                InferenceSpecification={
                    "Containers": [
                        {
                            "Image": self.image_uri,
                            "ModelDataUrl": f"s3://{self.bucket}/{key}/{ARCHIVE_FILE}",
                            "Environment": {"SAGEGATE_MODEL_SHA256": manifest.sha256},
                        }
                    ],
                    "SupportedContentTypes": _CONTENT_TYPES,
                    "SupportedResponseMIMETypes": ["application/json", "application/jsonlines", "text/csv"],
                },
                ModelApprovalStatus=ApprovalStatus.PENDING.value,
                CustomerMetadataProperties={
                    "sha256": manifest.sha256,
                    "archive_sha256": archive_sha,
                    "stage": Stage(stage).value,
                    "framework": manifest.framework.value,
                    "manifest_uri": f"s3://{self.bucket}/{key}/{MANIFEST_FILE}",
                    "package_version": manifest.version,
                },
                ClientToken=hashlib.sha256(f"{manifest.name}:{manifest.sha256}".encode()).hexdigest()[:36],
            )
            return self._describe(answer["ModelPackageArn"]), True

    def _ensure_group(self, manifest: ModelManifest) -> None:
        try:
            self._sm.describe_model_package_group(ModelPackageGroupName=manifest.name)
        except self._sm.exceptions.ClientError as exc:
            if "does not exist" not in str(exc) and "ValidationException" not in str(exc):
                raise RegistryError(f"cannot read model package group {manifest.name!r}: {exc}") from exc
            self._sm.create_model_package_group(
                ModelPackageGroupName=manifest.name, ModelPackageGroupDescription=f"sagegate model {manifest.name}"
            )

    def _put(self, path: Path, key: str) -> None:
        # No key named: no header, so the bucket's default encryption applies (the stack's buckets:
        # the environment's KMS key); AES256 here would override it with SSE-S3.
        extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self._kms} if self._kms else {}
        with path.open("rb") as body:
            self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, **extra)

    def _update(
        self,
        model: str,
        version: str,
        *,
        status: ApprovalStatus | None = None,
        description: str | None = None,
        **metadata: str,
    ) -> ModelVersion:
        current = self.get(model, version)
        assert current.arn is not None
        described = self._sm.describe_model_package(ModelPackageName=current.arn)
        before = described.get("CustomerMetadataProperties", {})
        # SageMaker refuses an empty value (length 1 to 256): an empty one is removed instead
        merged = {k: v for k, v in {**before, **metadata}.items() if v}
        removed = sorted(k for k, v in metadata.items() if not v and k in before)
        # The status is always sent, unchanged when not asked to change: SageMaker keeps it either way,
        # and so does every emulation of the API (moto clears an omitted one).
        request: dict[str, Any] = {
            "ModelPackageArn": current.arn,
            "CustomerMetadataProperties": merged,
            "ModelApprovalStatus": (status or current.status).value,
        }
        if removed:
            request["CustomerMetadataPropertiesToRemove"] = removed
        if status is not None and description:
            request["ApprovalDescription"] = description[:1000]
        self._sm.update_model_package(**request)
        return self._describe(current.arn)

    def approve(self, model: str, version: str, *, by: str, reason: str | None = None) -> ModelVersion:
        return self._update(
            model,
            version,
            status=ApprovalStatus.APPROVED,
            description=reason or f"approved by {by}",
            decided_by=by,
            decision_reason=reason or "",
        )

    def reject(self, model: str, version: str, *, by: str, reason: str) -> ModelVersion:
        if not reason.strip():
            raise RegistryError("a rejection needs a reason")
        return self._update(
            model, version, status=ApprovalStatus.REJECTED, description=reason, decided_by=by, decision_reason=reason
        )

    def set_stage(self, model: str, version: str, stage: Stage) -> ModelVersion:
        return self._update(model, version, stage=Stage(stage).value)

    # -- reads ----------------------------------------------------------------------------------

    def _summaries(self, model: str) -> list[dict[str, Any]]:
        paginator = self._sm.get_paginator("list_model_packages")
        summaries: list[dict[str, Any]] = []
        try:
            for page in paginator.paginate(ModelPackageGroupName=self._group(model)):
                summaries.extend(page["ModelPackageSummaryList"])
        except self._sm.exceptions.ClientError:
            return []
        return sorted(summaries, key=lambda s: int(s.get("ModelPackageVersion", 0)))

    def _find_by_sha(self, model: str, sha256: str) -> ModelVersion | None:
        for summary in self._summaries(model):
            described = self._sm.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
            if described.get("CustomerMetadataProperties", {}).get("sha256") == sha256:
                return self._from_description(described)
        return None

    def _describe(self, arn: str) -> ModelVersion:
        return self._from_description(self._sm.describe_model_package(ModelPackageName=arn))

    def _from_description(self, d: dict[str, Any]) -> ModelVersion:
        meta = d.get("CustomerMetadataProperties", {})
        version = str(d["ModelPackageVersion"])
        manifest = self._manifest(meta["manifest_uri"]).model_copy(update={"version": version})
        created = d.get("CreationTime") or datetime.now(UTC)
        return ModelVersion(
            model=d["ModelPackageGroupName"],
            version=version,
            status=ApprovalStatus(d["ModelApprovalStatus"]),
            stage=Stage(meta.get("stage", Stage.DEV.value)),
            sha256=meta["sha256"],
            archive_sha256=meta.get("archive_sha256", ""),
            artifact_uri=d["InferenceSpecification"]["Containers"][0]["ModelDataUrl"],
            manifest=manifest,
            created_at=created,
            decided_by=meta.get("decided_by") or None,
            decision_reason=meta.get("decision_reason") or None,
            arn=d["ModelPackageArn"],
        )

    def _manifest(self, uri: str) -> ModelManifest:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        body = self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return ModelManifest.model_validate_json(body)

    def baseline(self, model: str, version: str) -> bytes | None:
        """The version's monitoring baseline (beside its manifest), its sha256 checked against the
        manifest's; None when it was packaged without one."""
        return self.baseline_of(self.get(model, version))

    def baseline_of(self, found: ModelVersion) -> bytes | None:
        """`baseline` of a version already read (from `versions`): no second describe of it."""
        name = _baseline_file(found.manifest)
        if name is None:
            return None
        # beside model.tar.gz and manifest.json, under the version's content-addressed prefix
        bucket, _, key = found.artifact_uri.removeprefix("s3://").partition("/")
        body: bytes = self._s3.get_object(Bucket=bucket, Key=f"{key.rpartition('/')[0]}/{name}")["Body"].read()
        if hashlib.sha256(body).hexdigest() != found.manifest.extra_files[name]:
            raise RegistryError(
                f"{found.model} v{found.version}: {name} does not match the sha256 its manifest records"
            )
        return body

    def _group(self, model: str) -> str:
        if self._owner is None:
            return model
        meta = self._sm.meta
        return f"arn:{meta.partition}:sagemaker:{meta.region_name}:{self._owner}:model-package-group/{model}"

    def models(self) -> list[str]:
        if self._owner is not None:
            return list(self._models)
        paginator = self._sm.get_paginator("list_model_package_groups")
        return sorted(
            g["ModelPackageGroupName"] for page in paginator.paginate() for g in page["ModelPackageGroupSummaryList"]
        )

    def versions(self, model: str) -> list[ModelVersion]:
        return [self._describe(s["ModelPackageArn"]) for s in self._summaries(model)]

    def get(self, model: str, version: str) -> ModelVersion:
        for summary in self._summaries(model):
            if str(summary.get("ModelPackageVersion")) == version:
                return self._describe(summary["ModelPackageArn"])
        raise VersionNotFound(f"model {model!r} has no version {version!r}")


def _baseline_file(manifest: ModelManifest) -> str | None:
    settings = manifest.monitoring
    if settings is None or not settings.baseline or not settings.baseline_sha256:
        return None
    return settings.baseline
