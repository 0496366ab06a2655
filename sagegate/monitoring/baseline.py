"""The training baseline a package carries (baseline.json beside model.onnx), and how it is computed.

Per feature: count, missing rate, and for numbers mean, std, min, max, quantiles and a histogram over
FIXED bin edges (the training data's deciles), for categories their frequencies; then the histogram
of the packaged model's scores on the same data, its class rates, and its metrics on a labelled
holdout when one is given. The checks compare a window of the prediction log with these numbers,
binning the log with the very same edges (sagegate.monitoring.sql), so a histogram's bins mean the
same thing in training and in serving.

Bin i of a number x is the count of edges <= x (numpy's searchsorted(edges, x, side="right")):
(-inf, e0), [e0, e1), ..., [e_last, inf). Categorical frequencies end with an "other" bin.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sagegate.manifest import Feature, FeatureType, Outputs, Task
from sagegate.monitoring.statistics import auc_error, proportion_error

__all__ = [
    "BASELINE_FILE",
    "QUANTILES",
    "SCORE_EDGES",
    "Baseline",
    "CategoricalProfile",
    "NumericProfile",
    "PredictionProfile",
    "Profile",
    "Table",
    "as_columns",
    "categorical_profile",
    "class_index",
    "holdout_metrics",
    "numeric_profile",
    "prediction_profile",
    "rank_auc",
]

BASELINE_FILE = "baseline.json"
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
DECILES = tuple(i / 10 for i in range(1, 10))
SCORE_EDGES = [round(i / 10, 1) for i in range(1, 10)]  # a probability's ten bins
MAX_CATEGORIES = 50  # a string feature keeps its most frequent values; the rest is "other"

Table = dict[str, np.ndarray]  # column name -> values (object or float64), one row per record


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NumericProfile(_Frozen):
    kind: Literal["numeric"] = "numeric"
    count: int
    missing_rate: float
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    quantiles: dict[str, float]
    edges: list[float]
    frequencies: list[float] = Field(description="share of the non-missing values in each bin; len(edges) + 1")


class CategoricalProfile(_Frozen):
    kind: Literal["categorical"] = "categorical"
    count: int
    missing_rate: float
    categories: list[str]
    frequencies: list[float] = Field(description="share of each category, then of all others")


Profile = Annotated[NumericProfile | CategoricalProfile, Field(discriminator="kind")]


class PredictionProfile(_Frozen):
    score: str = Field(description="what the score is: positive-class probability, confidence or value")
    edges: list[float]
    frequencies: list[float]
    mean: float
    std: float
    class_rates: dict[str, float] | None = None


class Baseline(_Frozen):
    schema_version: Literal[1] = 1
    rows: int
    features: dict[str, Profile]
    prediction: PredictionProfile
    holdout_rows: int | None = None
    metrics: dict[str, float] = Field(default_factory=dict, description="the model's metrics on the holdout")
    metric_errors: dict[str, float] = Field(default_factory=dict, description="their standard errors")

    @classmethod
    def read(cls, path: Path) -> Baseline:
        return cls.model_validate_json(path.read_bytes())

    def dumps(self) -> str:
        return self.model_dump_json(indent=1, exclude_none=True)


def _float(value: float) -> float:
    return float(np.float64(value))


def _shares(counts: np.ndarray) -> list[float]:
    total = counts.sum()
    return [_float(c / total) if total else 0.0 for c in counts]


def as_columns(data: Any, names: Sequence[str]) -> Table:
    """`data` (a DataFrame, a 2-D array whose columns are `names` in order, a mapping of columns, or a
    list of records) as columns named `names`; a name it lacks is a ValueError."""
    if hasattr(data, "columns") and hasattr(data, "to_numpy"):  # a pandas DataFrame
        missing = [n for n in names if n not in data.columns]
        if missing:
            raise ValueError(f"the data has no column {missing[0]!r}")
        return {n: data[n].to_numpy(dtype=object) for n in names}
    if isinstance(data, Mapping):
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(f"the data has no column {missing[0]!r}")
        return {n: np.asarray(data[n], dtype=object) for n in names}
    if isinstance(data, np.ndarray):
        if data.ndim != 2 or data.shape[1] != len(names):
            raise ValueError(f"an array of the data needs one column per feature ({len(names)}), got {data.shape}")
        return {n: data[:, i].astype(object) for i, n in enumerate(names)}
    if isinstance(data, Sequence) and all(isinstance(r, Mapping) for r in data):
        return {n: np.array([r.get(n) for r in data], dtype=object) for n in names}
    raise ValueError(f"training data must be a DataFrame, an array or records, not {type(data).__name__}")


def _missing(values: np.ndarray) -> np.ndarray:
    return np.array([v is None or (isinstance(v, float) and math.isnan(v)) for v in values], dtype=bool)


def numeric_profile(values: np.ndarray, feature_type: FeatureType = FeatureType.FLOAT) -> NumericProfile:
    missing = _missing(values)
    present = np.asarray(values[~missing], dtype=np.float64)
    if feature_type is FeatureType.BOOL:
        edges = [0.5]
    else:
        edges = sorted({_float(e) for e in np.quantile(present, DECILES)}) if present.size else []
    counts = np.bincount(np.searchsorted(np.array(edges), present, side="right"), minlength=len(edges) + 1)
    found = present.size > 0
    return NumericProfile(
        count=len(values),
        missing_rate=_float(missing.mean()) if len(values) else 0.0,
        mean=_float(present.mean()) if found else None,
        std=_float(present.std()) if found else None,
        min=_float(present.min()) if found else None,
        max=_float(present.max()) if found else None,
        quantiles={
            f"p{round(q * 100):02d}": _float(v) for q, v in zip(QUANTILES, np.quantile(present, QUANTILES), strict=True)
        }
        if found
        else {},
        edges=edges,
        frequencies=_shares(counts),
    )


def categorical_profile(values: np.ndarray, declared: Sequence[str] | None = None) -> CategoricalProfile:
    missing = _missing(values)
    present = [str(v) for v in values[~missing]]
    count_of: dict[str, int] = {}
    for value in present:
        count_of[value] = count_of.get(value, 0) + 1
    # undeclared: the most frequent, ties by name, so that the same data always keeps the same ones
    categories = list(declared) if declared else sorted(sorted(count_of), key=lambda c: -count_of[c])[:MAX_CATEGORIES]
    known = [count_of.get(c, 0) for c in categories]
    kept = np.array([*known, len(present) - sum(known)])
    return CategoricalProfile(
        count=len(values),
        missing_rate=_float(missing.mean()) if len(values) else 0.0,
        categories=categories,
        frequencies=_shares(kept),
    )


def profile(feature: Feature, values: np.ndarray) -> NumericProfile | CategoricalProfile:
    if feature.type.is_numeric:
        return numeric_profile(values, feature.type)
    return categorical_profile(values, feature.categories if feature.type is FeatureType.CATEGORICAL else None)


def scores_of(outputs: Outputs, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(score, class index) per record from the ONNX output: the positive-class probability (binary),
    the top probability (multiclass), the value (regression, no class)."""
    if outputs.task is Task.REGRESSION:
        return raw.reshape(-1), None
    if outputs.task is Task.BINARY:
        score = raw[:, 1]
        return score, (score >= outputs.threshold).astype(np.int64)
    return raw.max(axis=1), raw.argmax(axis=1)


def prediction_profile(outputs: Outputs, score: np.ndarray, classes: np.ndarray | None) -> PredictionProfile:
    if outputs.task is Task.REGRESSION:
        edges = sorted({_float(e) for e in np.quantile(score, DECILES)})
        what = "value"
    else:
        edges = list(SCORE_EDGES)
        what = "positive-class probability" if outputs.task is Task.BINARY else "top-class probability"
    counts = np.bincount(np.searchsorted(np.array(edges), score, side="right"), minlength=len(edges) + 1)
    rates = None
    if classes is not None and outputs.labels:
        per_class = np.bincount(classes, minlength=len(outputs.labels))
        rates = dict(zip(outputs.labels, _shares(per_class), strict=True))
    return PredictionProfile(
        score=what,
        edges=edges,
        frequencies=_shares(counts),
        mean=_float(score.mean()),
        std=_float(score.std()),
        class_rates=rates,
    )


def class_index(outcome: Any, labels: Sequence[str]) -> int | None:
    """A truth as a class index: a label, a class index, or (binary) a boolean; else None. A whole
    number reads as its text, as the log keeps a feedback's outcome (sagegate.monitoring.sql's
    truth_expression reads that text the same way): a label first, else an index."""
    if isinstance(outcome, bool | np.bool_):
        return int(outcome) if len(labels) == 2 else None
    if isinstance(outcome, int | float | np.integer | np.floating):
        if not float(outcome).is_integer():
            return None
        outcome = str(int(outcome))
    if not isinstance(outcome, str):
        return None
    text = outcome.strip()
    if text in labels:
        return list(labels).index(text)
    if text.lower() in ("true", "false") and len(labels) == 2:
        return int(text.lower() == "true")
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number.is_integer() and 0 <= number < len(labels) else None


def rank_auc(truth: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U statistic over average ranks (ties count a half)."""
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype=np.float64)
    sorted_scores = score[order]
    # average rank of each run of equal scores
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(score)]
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e + 1) / 2
    positives = int(truth.sum())
    negatives = len(truth) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    return float((ranks[truth == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def holdout_metrics(
    outputs: Outputs, truth: np.ndarray, score: np.ndarray, classes: np.ndarray | None
) -> tuple[dict[str, float], dict[str, float]]:
    """What the accuracy checks compare against, and its standard errors: AUC, precision, recall,
    accuracy (binary), accuracy (multiclass), MAE (regression)."""
    if outputs.task is Task.REGRESSION:
        errors = np.abs(score - truth)
        return {"mae": _float(errors.mean())}, {"mae": _float(errors.std() / math.sqrt(len(errors)))}
    assert classes is not None
    metrics = {"accuracy": _float((classes == truth).mean())}
    spread = {"accuracy": proportion_error(metrics["accuracy"], len(truth))}
    if outputs.task is Task.BINARY:
        flagged, positive = classes == 1, truth == 1
        hits = int((flagged & positive).sum())
        metrics["precision"] = _float(hits / max(int(flagged.sum()), 1))
        metrics["recall"] = _float(hits / max(int(positive.sum()), 1))
        spread["precision"] = proportion_error(metrics["precision"], int(flagged.sum()))
        spread["recall"] = proportion_error(metrics["recall"], int(positive.sum()))
        auc = rank_auc(truth, score)
        if not math.isnan(auc):
            metrics["auc"] = _float(auc)
            spread["auc"] = auc_error(auc, int(positive.sum()), int((~positive).sum()))
    finite = {k: _float(v) for k, v in sorted(spread.items()) if math.isfinite(v)}
    return dict(sorted(metrics.items())), finite
