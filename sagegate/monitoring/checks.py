"""The checks: what each statistic is, against which part of the baseline, and when it fails.

Data quality, per logged feature: `missing_rate_increase` (the window's share of requests that did
not give it, minus the training data's), `out_of_range_rate` (share of values outside the training
data's [min, max]), `unknown_category_rate` (share of values outside the training data's categories,
minus the training data's own share of those), `type_failure_rate` (share of the model's requests
refused naming this feature). Feature drift: `psi` over the baseline's fixed bins (numbers) or its
categories plus "other", `mean_shift_sigma` (|mean - training mean| / training std). Prediction
drift: `score_tvd` and `class_rate_tvd`, the total variation distance (the share of predictions that
moved) of the score histogram and of the class rates. Accuracy from feedback: each holdout metric's
relative drop (`auc_drop`, `precision_drop`, `recall_drop`, `accuracy_drop`; `mae_rise`). Bias, per
protected attribute: `demographic_parity_difference` and `equalized_odds_difference` (fairlearn).

A window with fewer rows than `min_rows` is not judged (status "skipped"), nor is a statistic that
has no reference. Thresholds are the manifest's `monitoring.thresholds` (defaults in
sagegate.manifest.MonitoringThresholds).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sagegate.manifest import Feature, ModelManifest, MonitoringThresholds, Task
from sagegate.monitoring.baseline import Baseline, CategoricalProfile, NumericProfile
from sagegate.monitoring.sql import FeatureCounts, Window, WindowCounts
from sagegate.monitoring.statistics import auc_error, mean_shift_sigma, proportion_error, psi, total_variation

__all__ = [
    "MIN_CLASS_ROWS",
    "MIN_GROUP_ROWS",
    "Accuracy",
    "CheckResult",
    "GroupRates",
    "accuracy_checks",
    "accuracy_of",
    "bias_checks",
    "group_rates",
    "window_checks",
]

MIN_GROUP_ROWS = 30  # a protected group with fewer rows in the window is left out of the differences
# A metric measured on fewer rows than this (precision: flagged ones; recall and AUC: the rarer
# class) is not judged: its standard error would not mean much.
MIN_CLASS_ROWS = 30

Status = Literal["ok", "fail", "skipped"]


@dataclass(frozen=True)
class CheckResult:
    check: str  # data_quality | feature_drift | prediction_drift | accuracy | bias
    feature: str  # the feature, "prediction", or the protected attribute
    statistic: str
    value: float | None
    threshold: float
    window: str
    status: Status
    note: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "fail"


@dataclass(frozen=True)
class _Judge:
    """Results over one window: a value above its threshold fails; no value is skipped."""

    window: Window

    def __call__(
        self, check: str, feature: str, statistic: str, value: float | None, threshold: float, *, note: str = ""
    ) -> CheckResult:
        window = str(self.window)
        if value is None or math.isnan(value):
            return CheckResult(check, feature, statistic, None, threshold, window, "skipped", note or "no reference")
        status: Status = "fail" if value > threshold else "ok"
        return CheckResult(check, feature, statistic, value, threshold, window, status, note)


def _feature_checks(
    feature: Feature,
    profile: NumericProfile | CategoricalProfile,
    counts: FeatureCounts,
    *,
    rows: int,
    requests: int,
    limits: MonitoringThresholds,
    judge: _Judge,
) -> list[CheckResult]:
    name, hashed = feature.name, feature.sensitive == "hash"
    results = [
        judge(
            "data_quality",
            name,
            "missing_rate_increase",
            (1 - counts.present / rows) - profile.missing_rate,
            limits.missing_rate_increase,
        ),
        judge("data_quality", name, "type_failure_rate", counts.rejected / requests, limits.type_failure_rate),
    ]
    if not counts.present:
        return results
    if isinstance(profile, NumericProfile):
        if hashed:
            return results
        results.append(
            judge(
                "data_quality",
                name,
                "out_of_range_rate",
                (counts.below_min + counts.above_max) / counts.present,
                limits.out_of_range_rate,
            )
        )
        results.append(judge("feature_drift", name, "psi", psi(profile.frequencies, counts.bins), limits.psi))
        shift = (
            mean_shift_sigma(profile.mean, profile.std, counts.mean)
            if profile.mean is not None and profile.std is not None and counts.mean is not None
            else None
        )
        results.append(judge("feature_drift", name, "mean_shift_sigma", shift, limits.mean_shift_sigma))
    else:
        unknown = counts.bins[-1] / counts.present - profile.frequencies[-1]
        results.append(judge("data_quality", name, "unknown_category_rate", unknown, limits.unknown_category_rate))
        results.append(judge("feature_drift", name, "psi", psi(profile.frequencies, counts.bins), limits.psi))
    return results


def window_checks(
    manifest: ModelManifest, baseline: Baseline, counts: WindowCounts, window: Window
) -> list[CheckResult]:
    """Data quality, feature drift and prediction drift of one window's counts."""
    limits = manifest.thresholds
    if counts.rows < limits.min_rows:
        return [
            CheckResult(
                "volume", "", "rows", float(counts.rows), float(limits.min_rows), str(window), "skipped", "too few rows"
            )
        ]
    results: list[CheckResult] = []
    judge = _Judge(window)
    requests = counts.rows + counts.rejected_rows
    for feature in manifest.features:
        profile = baseline.features.get(feature.name)
        if feature.sensitive == "drop" or profile is None or feature.name not in counts.features:
            continue
        results += _feature_checks(
            feature,
            profile,
            counts.features[feature.name],
            rows=counts.rows,
            requests=requests,
            limits=limits,
            judge=judge,
        )
    if counts.model_rows >= limits.min_rows:
        prediction = baseline.prediction
        results.append(
            judge(
                "prediction_drift",
                "prediction",
                "score_tvd",
                total_variation(prediction.frequencies, counts.score_bins),
                limits.prediction_shift,
            )
        )
        if prediction.class_rates and counts.class_counts:
            labels = list(prediction.class_rates)
            results.append(
                judge(
                    "prediction_drift",
                    "prediction",
                    "class_rate_tvd",
                    total_variation(
                        [prediction.class_rates[label] for label in labels],
                        [counts.class_counts.get(label, 0) for label in labels],
                    ),
                    limits.prediction_shift,
                )
            )
    return results


@dataclass(frozen=True)
class Accuracy:
    """The model's metrics over labelled predictions (one window, or one day of it)."""

    rows: int
    metrics: dict[str, float]
    support: dict[str, int] = field(default_factory=dict)  # the rows each metric rests on, where fewer than all
    errors: dict[str, float] = field(default_factory=dict)  # each metric's standard error


def accuracy_of(task: Task, row: Sequence[float | None]) -> Accuracy:
    """Metrics, the rows behind each and their standard errors, from one row of AccuracyQuery
    (after its day column)."""
    if task is Task.BINARY:
        n, positives, tp, fp, fn, rank_sum = (float(v or 0) for v in row)
        negatives = n - positives
        metrics: dict[str, float] = {}
        errors: dict[str, float] = {}
        support = {"accuracy": int(n), "precision": int(tp + fp), "recall": int(positives)}
        for name, hits, of in (("accuracy", n - fp - fn, n), ("precision", tp, tp + fp), ("recall", tp, positives)):
            if of:
                metrics[name] = hits / of
                errors[name] = proportion_error(metrics[name], of)
        if positives and negatives:
            auc = (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
            metrics["auc"], errors["auc"] = auc, auc_error(auc, positives, negatives)
            support["auc"] = int(min(positives, negatives))
        return Accuracy(int(n), metrics, support, errors)
    if task is Task.MULTICLASS:
        n, hits = (float(v or 0) for v in row)
        if not n:
            return Accuracy(0, {})
        return Accuracy(int(n), {"accuracy": hits / n}, {}, {"accuracy": proportion_error(hits / n, n)})
    n, absolute, squared = (float(v or 0) for v in row)
    if not n:
        return Accuracy(0, {})
    mae = absolute / n
    return Accuracy(int(n), {"mae": mae}, {}, {"mae": math.sqrt(max(squared / n - mae * mae, 0.0) / n)})


def accuracy_checks(
    manifest: ModelManifest, baseline: Baseline, accuracy: Accuracy, window: Window
) -> list[CheckResult]:
    """Each holdout metric against the same metric from feedback: a relative drop (MAE: rise)."""
    limits = manifest.thresholds
    if accuracy.rows < limits.min_rows:
        return [
            CheckResult(
                "accuracy",
                "prediction",
                "labelled_rows",
                float(accuracy.rows),
                float(limits.min_rows),
                str(window),
                "skipped",
                "too little feedback",
            )
        ]
    results = []
    judge = _Judge(window)
    for metric, reference in sorted(baseline.metrics.items()):
        if metric not in accuracy.metrics or reference == 0:
            continue
        support = accuracy.support.get(metric, accuracy.rows)
        if support < MIN_CLASS_ROWS:
            statistic = f"{metric}_rise" if metric == "mae" else f"{metric}_drop"
            note = f"{support} rows behind {metric}, fewer than {MIN_CLASS_ROWS}: too noisy to judge"
            results.append(
                CheckResult(
                    "accuracy", "prediction", statistic, None, limits.accuracy_drop, str(window), "skipped", note
                )
            )
            continue
        current = accuracy.metrics[metric]
        change = (current - reference) / reference if metric == "mae" else (reference - current) / reference
        # Fails only if the change's 95% lower bound is past the threshold: noise alone cannot fail it.
        # Both sides are measurements: the holdout's error counts as much as the window's.
        error = math.hypot(accuracy.errors.get(metric, 0.0), baseline.metric_errors.get(metric, 0.0))
        surely = change - 1.96 * error / abs(reference)
        note = f"{metric} {current:.3f} vs holdout {reference:.3f}, 95% lower bound of the change {surely:+.1%}"
        result = judge(
            "accuracy",
            "prediction",
            f"{metric}_rise" if metric == "mae" else f"{metric}_drop",
            change,
            limits.accuracy_drop,
            note=note,
        )
        if result.failed and surely <= limits.accuracy_drop:
            result = dataclasses.replace(result, status="ok")
        results.append(result)
    return results


@dataclass(frozen=True)
class GroupRates:
    group: str
    rows: int
    selection_rate: float
    true_positive_rate: float | None = None
    false_positive_rate: float | None = None


def group_rates(rows: Sequence[tuple[Any, ...]]) -> list[GroupRates]:
    """Per group: the rate of positive predictions, and with truth the true and false positive rates."""
    groups: dict[str, dict[tuple[int | None, int], int]] = {}
    for group, truth, predicted, n in rows:
        cell = groups.setdefault(str(group), {})
        cell[(truth, int(predicted))] = cell.get((truth, int(predicted)), 0) + int(n)
    rates = []
    for group, cell in sorted(groups.items()):
        total = sum(cell.values())
        selected = sum(n for (_, p), n in cell.items() if p == 1)
        pos = sum(n for (t, _), n in cell.items() if t == 1)
        neg = sum(n for (t, _), n in cell.items() if t == 0)
        rates.append(
            GroupRates(
                group,
                total,
                selected / total if total else 0.0,
                cell.get((1, 1), 0) / pos if pos else None,
                cell.get((0, 1), 0) / neg if neg else None,
            )
        )
    return rates


def bias_checks(
    manifest: ModelManifest,
    feature: str,
    predicted: Sequence[tuple[Any, ...]],
    labelled: Sequence[tuple[Any, ...]],
    *,
    window: Window,
    accuracy_window: Window,
) -> list[CheckResult]:
    """Demographic parity difference over the window's predictions and equalized odds difference over
    the labelled ones (fairlearn, weighted by the engine's counts), across groups of MIN_GROUP_ROWS+."""
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    limit = manifest.thresholds.bias_difference
    results = []
    kept = _big_groups(predicted)
    if len({g for g, *_ in kept}) >= 2:
        value = demographic_parity_difference(
            [p for _, _, p, _ in kept],
            [p for _, _, p, _ in kept],
            sensitive_features=[g for g, *_ in kept],
            sample_weight=[n for *_, n in kept],
        )
        results.append(_Judge(window)("bias", feature, "demographic_parity_difference", float(value), limit))
    else:
        results.append(
            CheckResult(
                "bias", feature, "demographic_parity_difference", None, limit, str(window), "skipped", "one group"
            )
        )
    both = {g for g, t, _, _ in labelled if t == 1} & {g for g, t, _, _ in labelled if t == 0}
    kept = [r for r in _big_groups(labelled) if r[0] in both]
    if len({g for g, *_ in kept}) >= 2:
        value = equalized_odds_difference(
            [int(t or 0) for _, t, _, _ in kept],
            [p for _, _, p, _ in kept],
            sensitive_features=[g for g, *_ in kept],
            sample_weight=[n for *_, n in kept],
        )
        results.append(_Judge(accuracy_window)("bias", feature, "equalized_odds_difference", float(value), limit))
    else:
        note = "too little feedback per group"
        results.append(
            CheckResult(
                "bias", feature, "equalized_odds_difference", None, limit, str(accuracy_window), "skipped", note
            )
        )
    return results


def _big_groups(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    sizes: dict[str, int] = {}
    for group, _, _, n in rows:
        sizes[group] = sizes.get(group, 0) + int(n)
    return [r for r in rows if sizes[r[0]] >= MIN_GROUP_ROWS]
