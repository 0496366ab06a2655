"""`build_package`: a trained model in, a verified model package out (or nothing at all)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sagegate.features import FeaturePipeline, RecordError
from sagegate.manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    Feature,
    Framework,
    Lineage,
    ModelManifest,
    Outputs,
    Task,
)
from sagegate.packaging.archive import sha256_file, write_archive
from sagegate.packaging.converters import convert
from sagegate.packaging.exceptions import PackageError, ParityError

__all__ = ["BuiltPackage", "build_package", "onnx_predict"]

SAMPLE_KEPT = 5  # sample records stored in the manifest (all given are used for the parity check)


@dataclass(frozen=True)
class BuiltPackage:
    path: Path
    manifest: ModelManifest
    archive: Path
    archive_sha256: str
    max_abs_diff: float  # largest difference between source and ONNX outputs on the sample


def onnx_predict(onnx_bytes: bytes, input_name: str, output: str, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    if output not in names:
        raise PackageError(f"the ONNX model has no output {output!r} (it has {', '.join(names)})")
    result = session.run([output], {input_name: x})[0]
    return np.asarray(result, dtype=np.float64)


def build_package(
    model: Any,
    *,
    framework: Framework | str,
    name: str,
    version: str,
    features: Sequence[Feature | Mapping[str, Any]],
    task: Task | str,
    labels: Sequence[str] | None = None,
    threshold: float = 0.5,
    sample: Sequence[Mapping[str, Any]],
    output_dir: Path,
    metrics: Mapping[str, float] | None = None,
    lineage: Lineage | Mapping[str, Any] | None = None,
    description: str | None = None,
    entity_key: str | None = None,
    default_prediction: float | str | None = None,
    tolerance: float = 1e-3,
    torch_output: str = "logits",
    overwrite: bool = False,
) -> BuiltPackage:
    """Converts `model` to ONNX, checks it against the source on `sample`, and writes the package.

    Raises PackageError (one line) on any problem; the output directory is then left untouched.
    """
    try:
        framework = Framework(framework)
        task = Task(task)
    except ValueError as exc:
        raise PackageError(str(exc)) from None
    if not sample:
        raise PackageError("a sample input (at least one record) is required")
    parsed = [f if isinstance(f, Feature) else Feature.model_validate(f) for f in features]
    pipeline = FeaturePipeline(parsed)
    try:
        x = pipeline.transform(pipeline.rows_from_records(sample))
    except RecordError as exc:
        raise PackageError(f"sample {exc}") from None

    converted = convert(model, framework, task, pipeline.width, torch_output=torch_output)
    outputs = Outputs(
        task=task, labels=list(labels) if labels else None, threshold=threshold, onnx_output=converted.output
    )
    if converted.classes is not None and outputs.labels and converted.classes != len(outputs.labels):
        raise PackageError(
            f"the model predicts {converted.classes} classes but {len(outputs.labels)} labels were given"
        )
    got = onnx_predict(converted.onnx, "input", converted.output, x)
    _check_shape(got, task, outputs.labels, len(sample))
    max_diff = 0.0
    if converted.source_predict is not None:
        expected = converted.source_predict(x)
        max_diff = float(np.max(np.abs(expected.reshape(got.shape) - got))) if got.size else 0.0
        if not max_diff <= tolerance:
            raise ParityError(
                f"ONNX and {framework} outputs differ by {max_diff:.3g} on the sample "
                f"(tolerance {tolerance:g}); the package was not written"
            )

    manifest = ModelManifest(
        name=name,
        version=version,
        framework=framework,
        description=description,
        lineage=Lineage.model_validate(lineage) if isinstance(lineage, Mapping) else lineage,
        features=parsed,
        outputs=outputs,
        metrics=dict(metrics or {}),
        sample=[dict(r) for r in sample[:SAMPLE_KEPT]],
        sha256=hashlib.sha256(converted.onnx).hexdigest(),
        entity_key=entity_key,
        default_prediction=default_prediction,
    )
    path, archive = _write(output_dir, converted.onnx, manifest, overwrite)
    return BuiltPackage(path, manifest, archive, sha256_file(archive), max_diff)


def _check_shape(got: np.ndarray, task: Task, labels: list[str] | None, n: int) -> None:
    if task is Task.REGRESSION:
        if got.size != n:
            raise PackageError(f"expected one value per record from a regression model, got shape {got.shape}")
    elif got.shape != (n, len(labels or ())):
        raise PackageError(f"expected probabilities of shape ({n}, {len(labels or ())}), got {got.shape}")


def _write(output_dir: Path, onnx_bytes: bytes, manifest: ModelManifest, overwrite: bool) -> tuple[Path, Path]:
    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise PackageError(f"{output_dir} already exists (use overwrite to replace it)")
    parent = output_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=parent))
    except OSError as exc:
        raise PackageError(f"cannot write to {parent}: {exc.strerror or exc}") from None
    try:
        (staging / MODEL_FILE).write_bytes(onnx_bytes)
        (staging / MANIFEST_FILE).write_text(manifest.dumps())
        write_archive(staging)
        os.chmod(staging, 0o755)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(staging, output_dir)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise PackageError(f"cannot write the package to {output_dir}: {exc.strerror or exc}") from None
    return output_dir, output_dir / "model.tar.gz"
