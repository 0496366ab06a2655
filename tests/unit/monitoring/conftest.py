"""A real fraud model with its baseline, a real three-class model with its own, and prediction logs
written as the gateway writes them: features through the gateway's own LoggedFeatures, scores from
the packaged ONNX model (a multiclass one's score being its `score_field`, the top-class confidence)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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
from sagegate.manifest import Feature, ModelManifest
from sagegate.monitoring.baseline import Baseline
from sagegate.packaging import BuiltPackage, build_package
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


# -- a multiclass model ----------------------------------------------------------------------------

TIERS = ["bronze", "silver", "gold"]  # class i of the training labels 0, 1, 2
TIER_FEATURES: list[dict[str, Any]] = [
    {"name": "spend", "type": "float"},
    {"name": "tenure", "type": "float", "required": False, "default": 0.0},
    {"name": "visits", "type": "int", "minimum": 0, "maximum": 100},
    {
        "name": "region",
        "type": "categorical",
        "categories": ["north", "south", "east", "west"],
        "transforms": [{"kind": "one_hot"}],
    },
]
_REGION_EFFECT = {"north": (0.0, 0.0), "south": (0.6, -0.4), "east": (-0.3, 0.8), "west": (0.2, 0.2)}


def tier_data(n: int, seed: int, *, spend_shift: float = 0.0) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Customers and their tier (0, 1, 2), drawn from a softmax of their features (Gumbel-max):
    `spend_shift` moves the spend, and with it the mix of tiers."""
    rng = np.random.default_rng(seed)
    spend = rng.normal(size=n) + spend_shift
    tenure = rng.normal(size=n)
    visits = rng.poisson(3, size=n)
    region = rng.choice(list(_REGION_EFFECT), size=n, p=[0.4, 0.3, 0.2, 0.1])
    effect = np.array([_REGION_EFFECT[r] for r in region])
    logits = np.column_stack(
        [
            np.zeros(n),
            1.6 * spend - 0.5 * tenure + 0.2 * visits - 0.6 + effect[:, 0],
            -1.4 * spend + 1.2 * tenure - 0.1 * visits + effect[:, 1],
        ]
    )
    y = (logits + rng.gumbel(size=logits.shape)).argmax(axis=1)
    records = [
        {"spend": float(s), "tenure": float(t), "visits": int(v), "region": str(r)}
        for s, t, v, r in zip(spend, tenure, visits, region, strict=True)
    ]
    return records, y


@dataclass(frozen=True)
class Tiers:
    package: BuiltPackage
    model: Any  # the scikit-learn model the package was converted from
    pipeline: FeaturePipeline
    training: list[dict[str, Any]]
    holdout: list[dict[str, Any]]
    holdout_truth: np.ndarray

    def matrix(self, records: Sequence[dict[str, Any]]) -> np.ndarray:
        return self.pipeline.transform_records(list(records))


@pytest.fixture(scope="session")
def tiers(tmp_path_factory: pytest.TempPathFactory) -> Tiers:
    """A multinomial logistic regression on three tiers, packaged with a baseline of its training
    rows and a holdout whose truth is given half as labels, half as class indexes."""
    from sklearn.linear_model import LogisticRegression

    features = [Feature.model_validate(f) for f in TIER_FEATURES]
    pipeline = FeaturePipeline(features)
    training, y = tier_data(4000, seed=7)
    holdout, truth = tier_data(1500, seed=8)
    model = LogisticRegression(max_iter=2000).fit(pipeline.transform_records(training), y)
    labelled = [
        {**r, "tier": TIERS[t] if i % 2 else int(t)}
        for i, (r, t) in enumerate(zip(holdout, truth.tolist(), strict=True))
    ]
    built = build_package(
        model,
        framework="sklearn",
        name="tiers",
        version="1",
        features=features,
        task="multiclass",
        labels=TIERS,
        sample=training[:16],
        output_dir=tmp_path_factory.mktemp("tiers") / "pkg",
        training_data=training,
        holdout=labelled,
        label_column="tier",
        explain=False,
    )
    return Tiers(built, model, pipeline, training, holdout, truth)


def probabilities(package: BuiltPackage, records: Sequence[dict[str, Any]]) -> np.ndarray:
    """The packaged ONNX model's class probabilities, as the server computes them."""
    manifest = package.manifest
    pipeline = FeaturePipeline(manifest.features, input_name=manifest.onnx_input)
    inputs = pipeline.inputs(pipeline.rows_from_records(list(records)))
    return onnx_predict(package.path / "model.onnx", inputs, manifest.outputs.onnx_output)


def multiclass_lines(
    package: BuiltPackage,
    records: Sequence[dict[str, Any]],
    *,
    start: datetime = NOW - timedelta(minutes=50),
    spread: timedelta = timedelta(minutes=40),
    prefix: str = "t",
) -> list[dict[str, Any]]:
    """Prediction lines of a multiclass model as the gateway's predictor logs them: the label and
    prediction the top class, the confidence its probability, the score the LoggedFeatures' score_field."""
    manifest = package.manifest
    labels = manifest.outputs.labels or []
    logged = LoggedFeatures(manifest)
    lines = []
    for i, (record, p) in enumerate(zip(records, probabilities(package, records).tolist(), strict=True)):
        top = int(np.argmax(p))
        answer = {"prediction": labels[top], "label": labels[top], "confidence": p[top]}
        lines.append(
            {
                "prediction_id": f"{prefix}{i}",
                "model": manifest.name,
                "version": manifest.version,
                "variant": "v1",
                "features": logged(record, record),
                **answer,
                "score": answer[logged.score_field],
                "latency_ms": 1.0,
                "cache_hit": False,
                "degraded": False,
                "timestamp": (start + spread * (i / max(len(records), 1))).isoformat(),
            }
        )
    return lines


def feedback_lines(
    predictions: Sequence[dict[str, Any]], truth: Sequence[Any], *, after: timedelta = timedelta(seconds=20)
) -> list[dict[str, Any]]:
    """One feedback line per prediction whose truth is not None (a label, or a class index)."""
    return [
        {
            "type": "feedback",
            "prediction_id": line["prediction_id"],
            "outcome": outcome,
            "model": line["model"],
            "timestamp": (datetime.fromisoformat(line["timestamp"]) + after).isoformat(),
        }
        for line, outcome in zip(predictions, truth, strict=True)
        if outcome is not None
    ]


__all__ = [
    "NOW",
    "TIERS",
    "Tiers",
    "feedback_lines",
    "generate_transactions",
    "log_lines",
    "multiclass_lines",
    "probabilities",
    "scores",
    "shifted",
    "tier_data",
    "write_log",
]
