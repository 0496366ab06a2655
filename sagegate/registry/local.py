"""The local registry: SQLite plus an artifact folder under the project's state folder (.sagegate/).

Versions are numbered per model inside one `BEGIN IMMEDIATE` transaction, so concurrent
registrations (threads or processes) never give two versions one number; an artifact already
registered for the model (same model.onnx sha256) returns its existing version.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sagegate.manifest import MANIFEST_FILE, MODEL_FILE, ModelManifest
from sagegate.packaging.archive import ARCHIVE_FILE, sha256_file, write_archive
from sagegate.registry.package_reader import checked_package
from sagegate.registry.protocol import ApprovalStatus, ModelVersion, RegistryError, Stage, VersionNotFound

__all__ = ["LocalRegistry"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    archive_sha256 TEXT NOT NULL,
    status TEXT NOT NULL,
    stage TEXT NOT NULL,
    manifest TEXT NOT NULL,
    artifact TEXT NOT NULL,
    created_at TEXT NOT NULL,
    decided_by TEXT,
    decision_reason TEXT,
    PRIMARY KEY (model, version),
    UNIQUE (model, sha256)
);
"""


class LocalRegistry:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.artifacts = root / "artifacts"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self._db = root / "registry.sqlite3"
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self._db, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA journal_mode=WAL")
            yield db
        finally:
            db.close()

    def register(self, package: Path, *, stage: Stage = Stage.DEV) -> tuple[ModelVersion, bool]:
        with checked_package(package) as (folder, manifest):
            # Copy the artifact first, outside the transaction, into a folder named by its content.
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.artifacts))
            try:
                shutil.copyfile(folder / MODEL_FILE, staging / MODEL_FILE)
                baseline = manifest.monitoring.baseline if manifest.monitoring is not None else None
                if baseline is not None:
                    shutil.copyfile(folder / baseline, staging / baseline)
                with self._connect() as db:
                    db.execute("BEGIN IMMEDIATE")
                    try:
                        existing = db.execute(
                            "SELECT * FROM versions WHERE model = ? AND sha256 = ?", (manifest.name, manifest.sha256)
                        ).fetchone()
                        if existing is not None:
                            db.execute("ROLLBACK")
                            return self._version(existing), False
                        number = db.execute(
                            "SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE model = ?", (manifest.name,)
                        ).fetchone()[0]
                        numbered = manifest.model_copy(update={"version": str(number)})
                        (staging / MANIFEST_FILE).write_text(numbered.dumps())
                        write_archive(staging, extra=[baseline] if baseline else [])
                        target = self.artifacts / manifest.name / str(number)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        if target.exists():  # left by a registration that died before its commit
                            shutil.rmtree(target)
                        os.replace(staging, target)
                        now = datetime.now(UTC).isoformat()
                        db.execute(
                            "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
                            (
                                manifest.name,
                                number,
                                manifest.sha256,
                                sha256_file(target / ARCHIVE_FILE),
                                ApprovalStatus.PENDING.value,
                                stage.value,
                                numbered.model_dump_json(),
                                str(target / ARCHIVE_FILE),
                                now,
                            ),
                        )
                        db.execute("COMMIT")
                    except BaseException:
                        db.execute("ROLLBACK")
                        raise
                return self.get(manifest.name, str(number)), True
            finally:
                shutil.rmtree(staging, ignore_errors=True)

    def _version(self, row: sqlite3.Row) -> ModelVersion:
        return ModelVersion(
            model=row["model"],
            version=str(row["version"]),
            status=ApprovalStatus(row["status"]),
            stage=Stage(row["stage"]),
            sha256=row["sha256"],
            archive_sha256=row["archive_sha256"],
            artifact_uri=row["artifact"],
            manifest=ModelManifest.model_validate_json(row["manifest"]),
            created_at=datetime.fromisoformat(row["created_at"]),
            decided_by=row["decided_by"],
            decision_reason=row["decision_reason"],
        )

    def models(self) -> list[str]:
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT DISTINCT model FROM versions ORDER BY model")]

    def versions(self, model: str) -> list[ModelVersion]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM versions WHERE model = ? ORDER BY version", (model,)).fetchall()
        return [self._version(r) for r in rows]

    def get(self, model: str, version: str) -> ModelVersion:
        if not version.isdigit():
            raise VersionNotFound(f"model {model!r} has no version {version!r}")
        with self._connect() as db:
            row = db.execute("SELECT * FROM versions WHERE model = ? AND version = ?", (model, int(version))).fetchone()
        if row is None:
            raise VersionNotFound(f"model {model!r} has no version {version!r}")
        return self._version(row)

    def _update(self, model: str, version: str, **columns: Any) -> ModelVersion:
        self.get(model, version)  # raises for an unknown version
        assignments = ", ".join(f"{name} = ?" for name in columns)
        with self._connect() as db:
            db.execute(
                f"UPDATE versions SET {assignments} WHERE model = ? AND version = ?",
                (*columns.values(), model, int(version)),
            )
        return self.get(model, version)

    def approve(self, model: str, version: str, *, by: str, reason: str | None = None) -> ModelVersion:
        return self._update(model, version, status=ApprovalStatus.APPROVED.value, decided_by=by, decision_reason=reason)

    def reject(self, model: str, version: str, *, by: str, reason: str) -> ModelVersion:
        if not reason.strip():
            raise RegistryError("a rejection needs a reason")
        return self._update(model, version, status=ApprovalStatus.REJECTED.value, decided_by=by, decision_reason=reason)

    def set_stage(self, model: str, version: str, stage: Stage) -> ModelVersion:
        return self._update(model, version, stage=Stage(stage).value)
