"""Reading a package to register: a folder or a model.tar.gz, its manifest checked against its ONNX."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sagegate.manifest import MANIFEST_FILE, MODEL_FILE, ModelManifest
from sagegate.packaging.archive import extract_archive, sha256_file
from sagegate.registry.protocol import RegistryError

__all__ = ["checked_package"]


@contextmanager
def checked_package(package: Path) -> Iterator[tuple[Path, ModelManifest]]:
    """The package's folder and manifest, after checking model.onnx (and the monitoring baseline, when
    there is one) against the manifest's sha256."""
    scratch = None
    try:
        if package.is_file():
            scratch = Path(tempfile.mkdtemp(prefix="sagegate-register-"))
            try:
                folder = extract_archive(package, scratch)
            except Exception as exc:  # tarfile raises several kinds
                raise RegistryError(f"{package} is not a model archive: {exc}") from None
        elif package.is_dir():
            folder = package
        else:
            raise RegistryError(f"no model package at {package}")
        for name in (MODEL_FILE, MANIFEST_FILE):
            if not (folder / name).is_file():
                raise RegistryError(f"{package} is not a model package: {name} is missing")
        try:
            manifest = ModelManifest.read(folder)
        except ValueError as exc:
            raise RegistryError(f"{package}/manifest.json is invalid: {str(exc).splitlines()[0]}") from None
        digest = sha256_file(folder / MODEL_FILE)
        if digest != manifest.sha256:
            raise RegistryError(
                f"{package}: model.onnx has sha256 {digest[:12]}..., its manifest says "
                f"{manifest.sha256[:12]}...; refusing a modified artifact"
            )
        baseline = manifest.monitoring.baseline if manifest.monitoring is not None else None
        if baseline is not None:
            if not (folder / baseline).is_file():
                raise RegistryError(f"{package} is not a model package: its baseline {baseline} is missing")
            if sha256_file(folder / baseline) != (manifest.monitoring and manifest.monitoring.baseline_sha256):
                raise RegistryError(f"{package}: {baseline} differs from its manifest's sha256; refusing it")
        yield folder, manifest
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
