"""A real fraud model with its baseline, and prediction logs written as the gateway writes them:
features through the gateway's own LoggedFeatures, scores from the packaged ONNX model."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from sagegate.features import FeaturePipeline
from sagegate.gateway.prediction_log import LoggedFeatures
from sagegate.local.data import Transactions, generate_transactions, shifted_records
from sagegate.local.examples import build_fraud_package
from sagegate.manifest import ModelManifest
from sagegate.monitoring.baseline import Baseline
from sagegate.packaging import BuiltPackage
from sagegate.packaging.builder import onnx_predict

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def fraud(tmp_path_factory: pytest.TempPathFactory) -> BuiltPackage:
    return build_fraud_package(tmp_path_factory.mktemp("fraud") / "pkg", "logreg", rows=8000, seed=3)


@pytest.fixture(scope="session")
def fraud_baseline(fraud: BuiltPackage) -> Baseline:
    assert fraud.baseline is not None
    return Baseline.read(fraud.baseline)


def scores(package: BuiltPackage, records: Sequence[dict[str, Any]]) -> np.ndarray:
    manifest = package.manifest
    pipeline = FeaturePipeline(manifest.features, input_name=manifest.onnx_input)
    inputs = pipeline.inputs(pipeline.rows_from_records(list(records)))
    return onnx_predict(package.path / "model.onnx", inputs, manifest.outputs.onnx_output)[:, 1]


def shifted(data: Transactions, seed: int = 0) -> list[dict[str, Any]]:
    """Amounts x3 and a merchant mix leaning to electronics and gaming: the demo's drift."""
    return shifted_records(data, seed)


def log_lines(
    package: BuiltPackage,
    records: Sequence[dict[str, Any]],
    *,
    start: datetime = NOW - timedelta(minutes=50),
    spread: timedelta = timedelta(minutes=40),
    labels: Sequence[int] | None = None,
    manifest: ModelManifest | None = None,
    prefix: str = "p",
) -> list[bytes]:
    """Prediction lines (and feedback lines when `labels` are given) spread evenly over `spread`."""
    manifest = manifest or package.manifest
    logged = LoggedFeatures(manifest)
    score = scores(package, records)
    threshold = manifest.outputs.threshold
    lines = []
    for i, (record, p) in enumerate(zip(records, score.tolist(), strict=True)):
        at = start + spread * (i / max(len(records), 1))
        pid = f"{prefix}{i}"
        clean = {k: (float(v) if isinstance(v, bool | int | float) else v) for k, v in record.items()}
        lines.append(
            orjson.dumps(
                {
                    "prediction_id": pid,
                    "model": manifest.name,
                    "version": manifest.version,
                    "variant": "v1",
                    "features": logged(clean, record),
                    "prediction": p,
                    "label": "fraud" if p >= threshold else "legit",
                    "confidence": max(p, 1 - p),
                    "score": p,
                    "cache_hit": False,
                    "degraded": False,
                    "timestamp": at.isoformat(),
                }
            )
        )
        if labels is not None:
            lines.append(
                orjson.dumps(
                    {
                        "type": "feedback",
                        "prediction_id": pid,
                        "outcome": int(labels[i]),
                        "model": manifest.name,
                        "timestamp": (at + timedelta(seconds=5)).isoformat(),
                    }
                )
            )
    return lines


def write_log(path: Path, *chunks: list[bytes]) -> Path:
    with path.open("ab") as fh:
        for lines in chunks:
            fh.write(b"\n".join(lines) + b"\n")
    return path


__all__ = ["NOW", "generate_transactions", "log_lines", "scores", "shifted", "write_log"]
