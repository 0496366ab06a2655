"""Model packages: a trained model converted to ONNX plus its manifest, verified before writing.

`archive` and `exceptions` are light; the builder (numpy, ONNX Runtime, converters) is imported
on first use, so the registry and the gateway can read packages without numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sagegate.packaging.archive import ARCHIVE_FILE, extract_archive, sha256_file, write_archive
from sagegate.packaging.exceptions import PackageError, ParityError

if TYPE_CHECKING:
    from sagegate.packaging.builder import BuiltPackage, build_package

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


def __getattr__(name: str) -> Any:
    if name in ("BuiltPackage", "build_package"):
        from sagegate.packaging import builder

        return getattr(builder, name)
    raise AttributeError(f"module 'sagegate.packaging' has no attribute {name!r}")
