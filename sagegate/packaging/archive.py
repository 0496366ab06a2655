"""Hashing and the model.tar.gz that SageMaker extracts into /opt/ml/model."""

from __future__ import annotations

import gzip
import hashlib
import tarfile
from collections.abc import Sequence
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


def write_archive(package_dir: Path, extra: Sequence[str] = ()) -> Path:
    """model.tar.gz beside the package's files, holding model.onnx, manifest.json (and the model's
    data files) at its root; the same files give the same bytes (no times, owners or modes kept)."""
    target = package_dir / ARCHIVE_FILE
    with (
        target.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name in (MODEL_FILE, MANIFEST_FILE, *sorted(extra)):
            info = tar.gettarinfo(str(package_dir / name), arcname=name)
            info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", 0o644
            with (package_dir / name).open("rb") as fh:
                tar.addfile(info, fh)
    return target


def extract_archive(archive: Path, destination: Path) -> Path:
    """Extracts a model archive safely (no absolute paths, links or devices)."""
    destination.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:*") as tar:
        tar.extractall(destination, filter="data")
    return destination
