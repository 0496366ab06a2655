"""Model packages: a trained model converted to ONNX plus its manifest, verified before writing."""

from __future__ import annotations

from sagegate.packaging.archive import ARCHIVE_FILE, extract_archive, sha256_file, write_archive
from sagegate.packaging.builder import BuiltPackage, build_package
from sagegate.packaging.exceptions import PackageError, ParityError

__all__ = [
    "ARCHIVE_FILE",
    "BuiltPackage",
    "PackageError",
    "ParityError",
    "build_package",
    "extract_archive",
    "sha256_file",
    "write_archive",
]
