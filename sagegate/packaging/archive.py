"""Hashing and the model.tar.gz that SageMaker extracts into /opt/ml/model."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

from sagegate.manifest import MANIFEST_FILE, MODEL_FILE

__all__ = ["ARCHIVE_FILE", "extract_archive", "sha256_file", "write_archive"]

ARCHIVE_FILE = "model.tar.gz"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_archive(package_dir: Path) -> Path:
    """model.tar.gz beside the package's files, holding model.onnx and manifest.json at its root."""
    target = package_dir / ARCHIVE_FILE
    with tarfile.open(target, "w:gz") as tar:
        for name in (MODEL_FILE, MANIFEST_FILE):
            tar.add(package_dir / name, arcname=name)
    return target


def extract_archive(archive: Path, destination: Path) -> Path:
    """Extracts a model archive safely (no absolute paths, links or devices)."""
    destination.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:*") as tar:
        tar.extractall(destination, filter="data")
    return destination
