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
        for name, expected in {MODEL_FILE: manifest.sha256, **manifest.extra_files}.items():
            if not (folder / name).is_file():
                raise RegistryError(f"{package} is not a model package: {name} is missing")
            digest = sha256_file(folder / name)
            if digest != expected:
                raise RegistryError(
                    f"{package}: {name} has sha256 {digest[:12]}..., its manifest says "
                    f"{expected[:12]}...; refusing a modified artifact"
                )
        yield folder, manifest
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
