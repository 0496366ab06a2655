"""The model a batch runs, loaded one way wherever the batch runs (`sagegate batch`, the local jobs
of `/v1/batch_predict`, the spot container): a package folder, its model.tar.gz, or a folder that
holds either (a SageMaker channel), unpacked into scratch space that goes with it."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sagegate.manifest import MANIFEST_FILE
from sagegate.packaging.archive import extract_archive
from sagegate.server.model import LoadedModel

__all__ = ["batch_model", "package_folder"]


def package_folder(source: Path, scratch: Path) -> Path:
    """The package folder of `source`, unpacking an archive into `scratch` where needed."""
    if source.is_file():
        return extract_archive(source, scratch / "package")
    if (source / MANIFEST_FILE).exists():
        return source
    archives = sorted(source.rglob("*.tar.gz")) if source.is_dir() else []
    if not archives:
        raise FileNotFoundError(f"no model package (manifest.json or model.tar.gz) in {source}")
    return extract_archive(archives[0], scratch / "package")


@contextmanager
def batch_model(source: Path, *, name: str = "batch", threads: int = 0) -> Iterator[LoadedModel]:
    """The package at `source` loaded for a batch run (CPU, `threads` for ONNX Runtime)."""
    scratch = Path(tempfile.mkdtemp(prefix="sagegate-batch-"))
    try:
        yield LoadedModel.load(name, package_folder(source, scratch), ["CPUExecutionProvider"], threads)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
