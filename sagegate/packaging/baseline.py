"""The package's monitoring baseline: training data profiled and scored by the packaged ONNX model
itself (not the source model), so the prediction histogram is the one serving should reproduce."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from sagegate.features import FeaturePipeline, RecordError
from sagegate.manifest import Feature, Outputs, Task
from sagegate.monitoring.baseline import (
    Baseline,
    as_columns,
    class_index,
    holdout_metrics,
    prediction_profile,
    profile,
    scores_of,
)
from sagegate.packaging.exceptions import PackageError

__all__ = ["BASELINE_ROWS", "compute_baseline"]

BASELINE_ROWS = 200_000  # more training rows than this: a seeded sample of them is profiled

Predict = Callable[[dict[str, np.ndarray]], np.ndarray]


def _records(table: dict[str, np.ndarray], names: Sequence[str]) -> list[dict[str, Any]]:
    rows = len(next(iter(table.values()))) if table else 0
    records: list[dict[str, Any]] = [{} for _ in range(rows)]
    for name in names:
        for record, value in zip(records, table[name].tolist(), strict=True):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            record[name] = value.item() if isinstance(value, np.generic) else value
    return records


def _sampled(table: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    rows = len(next(iter(table.values())))
    if rows <= BASELINE_ROWS:
        return table
    keep = np.sort(np.random.default_rng(0).choice(rows, BASELINE_ROWS, replace=False))
    return {name: column[keep] for name, column in table.items()}


def _scored(
    what: str, table: dict[str, np.ndarray], features: Sequence[Feature], pipeline: FeaturePipeline, predict: Predict
) -> np.ndarray:
    try:
        rows = pipeline.rows_from_records(_records(table, [f.name for f in features]))
    except RecordError as exc:
        raise PackageError(f"{what} {exc}") from None
    return predict(pipeline.inputs(rows))


def _truth(outputs: Outputs, values: np.ndarray) -> np.ndarray:
    if outputs.task is Task.REGRESSION:
        try:
            return np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise PackageError("holdout labels of a regression model must be numbers") from None
    labels = outputs.labels or []
    indexes = [class_index(v.item() if isinstance(v, np.generic) else v, labels) for v in values]
    bad = next((i for i, v in enumerate(indexes) if v is None), None)
    if bad is not None:
        raise PackageError(f"holdout label of row {bad} ({values[bad]!r}) is not one of {labels} nor a class index")
    return np.array(indexes, dtype=np.int64)


def compute_baseline(
    features: Sequence[Feature],
    outputs: Outputs,
    pipeline: FeaturePipeline,
    predict: Predict,
    *,
    training: Any,
    holdout: Any = None,
    label_column: str | None = None,
) -> Baseline:
    """The baseline of `training` (features only; a `label_column` in it is ignored) and, with a
    labelled `holdout`, the model's metrics on it."""
    names = [f.name for f in features]
    try:
        table = _sampled(as_columns(training, names))
    except ValueError as exc:
        raise PackageError(f"training data: {exc}") from None
    if not len(next(iter(table.values()))):
        raise PackageError("training data: no rows")
    score, classes = scores_of(outputs, _scored("training data", table, features, pipeline, predict))
    metrics: dict[str, float] = {}
    errors: dict[str, float] = {}
    holdout_rows = None
    if holdout is not None:
        if label_column is None:
            raise PackageError("a holdout needs its label column (label_column)")
        try:
            held = as_columns(holdout, [*names, label_column])
        except ValueError as exc:
            raise PackageError(f"holdout: {exc}") from None
        truth = _truth(outputs, held.pop(label_column))
        if not len(truth):
            raise PackageError("holdout: no rows")
        held_score, held_classes = scores_of(outputs, _scored("holdout", held, features, pipeline, predict))
        metrics, errors = holdout_metrics(outputs, truth, held_score, held_classes)
        holdout_rows = len(truth)
    return Baseline(
        rows=len(score),
        features={f.name: profile(f, table[f.name]) for f in features},
        prediction=prediction_profile(outputs, score, classes),
        holdout_rows=holdout_rows,
        metrics=metrics,
        metric_errors=errors,
    )
