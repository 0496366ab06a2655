"""One model version over one window: the checks' queries run on an engine, judged against the
package's baseline, with what the report draws (histograms side by side, accuracy per day, rates
per protected group).

Planning and judging are apart so that the queries can run elsewhere: `version_queries` names every
query a version's checks need, `judge_version` judges their rows. `monitor_version` does both
around a local engine; in AWS a workflow runs the queries on Athena between the two (its rows read
by sagegate.monitoring.athena). Judging imports no engine."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sagegate.manifest import ModelManifest, Task
from sagegate.monitoring.baseline import Baseline, CategoricalProfile, NumericProfile
from sagegate.monitoring.checks import (
    Accuracy,
    CheckResult,
    GroupRates,
    accuracy_checks,
    accuracy_of,
    bias_checks,
    group_rates,
    window_checks,
)
from sagegate.monitoring.engine import MonitoringEngine
from sagegate.monitoring.sql import (
    DUCKDB,
    AccuracyQuery,
    Dialect,
    GroupQuery,
    ProfileQuery,
    Scope,
    Window,
    WindowCounts,
    versions_sql,
)
from sagegate.monitoring.statistics import proportions

__all__ = [
    "Histogram",
    "VersionReport",
    "judge_version",
    "monitor_version",
    "parse_window",
    "version_queries",
    "versions_from_rows",
    "versions_in_window",
]

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_window(text: str) -> timedelta:
    """ "90s", "30m", "1h", "7d" as a duration; else a ValueError saying what is accepted."""
    match = re.fullmatch(r"([1-9][0-9]{0,5})([smhd])", text.strip())
    if match is None:
        raise ValueError(f"bad window {text!r}: a whole number and s, m, h or d (e.g. 30m, 1h, 7d)")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def window_ending(end: datetime, text: str) -> Window:
    return Window(end - parse_window(text), end, text)


@dataclass(frozen=True)
class Histogram:
    """A feature's (or the score's) distribution in training and in the window, bin by bin."""

    name: str
    bins: list[str]
    baseline: list[float]
    current: list[float]


def _edge_labels(edges: list[float]) -> list[str]:
    if not edges:
        return ["all"]
    return [
        f"< {edges[0]:.4g}",
        *(f"{a:.4g} to {b:.4g}" for a, b in itertools.pairwise(edges)),
        f">= {edges[-1]:.4g}",
    ]


@dataclass
class VersionReport:
    model: str
    version: str
    window: Window
    accuracy_window: Window
    counts: WindowCounts
    results: list[CheckResult]
    histograms: dict[str, Histogram] = field(default_factory=dict)
    prediction: Histogram | None = None
    accuracy_by_day: list[tuple[str, Accuracy]] = field(default_factory=list)
    bias: dict[str, list[GroupRates]] = field(default_factory=dict)

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.failed]

    @property
    def drifted(self) -> list[str]:
        """Features whose data quality or distribution check failed, in the manifest's order."""
        names = {r.feature for r in self.failed if r.check in ("data_quality", "feature_drift")}
        return [name for name in self.histograms if name in names]


def versions_in_window(
    engine: MonitoringEngine, model: str, window: Window, manifest: ModelManifest | None = None
) -> dict[str, int]:
    """The versions of `model` with predictions in the window (read through `manifest`'s source when
    given: the one the checks then read)."""
    source = engine.source(manifest)
    return versions_from_rows(engine.rows(versions_sql(engine.dialect, source, model, window)))


def versions_from_rows(rows: Sequence[Sequence[Any]]) -> dict[str, int]:
    """The rows of `versions_sql` as {version: predictions}."""
    return {str(v): int(n) for v, n in rows}


def _bias_features(manifest: ModelManifest) -> list[str]:
    if manifest.outputs.task is not Task.BINARY:
        return []
    return [f.name for f in manifest.features if f.protected]


def version_queries(
    dialect: Dialect,
    source: str,
    manifest: ModelManifest,
    baseline: Baseline,
    *,
    window: Window,
    accuracy_window: Window,
) -> dict[str, str]:
    """Every query the checks of `manifest`'s version need, by name: `profile`, `accuracy`,
    `accuracy_by_day`, and per protected attribute of a binary model `bias:<feature>:predicted` and
    `bias:<feature>:labelled`. `source` is the log as `dialect`'s engine names it."""
    scope = Scope(dialect, source, manifest, manifest.version, window)
    labelled = Scope(dialect, source, manifest, manifest.version, accuracy_window)
    queries = {
        "profile": ProfileQuery(scope, baseline).sql,
        "accuracy": AccuracyQuery.build(labelled, by_day=False).sql,
        "accuracy_by_day": AccuracyQuery.build(labelled, by_day=True).sql,
    }
    for name in _bias_features(manifest):
        feature = manifest.feature(name)
        queries[f"bias:{name}:predicted"] = GroupQuery.build(scope, baseline, feature, labelled=False).sql
        queries[f"bias:{name}:labelled"] = GroupQuery.build(labelled, baseline, feature, labelled=True).sql
    return queries


def monitor_version(
    engine: MonitoringEngine,
    manifest: ModelManifest,
    baseline: Baseline,
    *,
    window: Window,
    accuracy_window: Window,
) -> VersionReport:
    queries = version_queries(
        engine.dialect, engine.source(manifest), manifest, baseline, window=window, accuracy_window=accuracy_window
    )
    results = {name: engine.rows(sql) for name, sql in queries.items()}
    return judge_version(manifest, baseline, results, window=window, accuracy_window=accuracy_window)


def judge_version(
    manifest: ModelManifest,
    baseline: Baseline,
    results: Mapping[str, Sequence[Sequence[Any]]],
    *,
    window: Window,
    accuracy_window: Window,
) -> VersionReport:
    """The checks judged from the rows of `version_queries` (by its names; each row the values in
    SELECT order, typed: numbers, text, the day as a date or datetime)."""
    version = manifest.version
    # the profile row's layout is the query's, whatever the dialect that wrote it
    profile = ProfileQuery(Scope(DUCKDB, "log", manifest, version, window), baseline)
    (row,) = results["profile"]
    counts = profile.parse(row)
    checks = window_checks(manifest, baseline, counts, window)

    task = manifest.outputs.task
    # no feedback in the window: no row at all (the query groups); a task's row has its own width
    rows = results["accuracy"]
    overall = accuracy_of(task, rows[0][1:]) if rows else Accuracy(0, {})
    checks += accuracy_checks(manifest, baseline, overall, accuracy_window)
    by_day = [
        (day.strftime("%Y-%m-%d"), accuracy_of(task, rest))
        for day, *rest in results["accuracy_by_day"]
        if day is not None
    ]

    bias: dict[str, list[GroupRates]] = {}
    for name in _bias_features(manifest):
        predicted = [tuple(r) for r in results[f"bias:{name}:predicted"]]
        truthful = [tuple(r) for r in results[f"bias:{name}:labelled"]]
        checks += bias_checks(manifest, name, predicted, truthful, window=window, accuracy_window=accuracy_window)
        bias[name] = group_rates([*predicted]) if not truthful else _merged(predicted, truthful)

    report = VersionReport(manifest.name, version, window, accuracy_window, counts, checks, accuracy_by_day=by_day)
    report.bias = bias
    for name, profile_ in baseline.features.items():
        current = counts.features.get(name)
        if current is None or not current.bins:
            continue
        bins = (
            _edge_labels(profile_.edges)
            if isinstance(profile_, NumericProfile)
            else [*profile_.categories, "other"]
            if isinstance(profile_, CategoricalProfile)
            else []
        )
        report.histograms[name] = Histogram(name, bins, profile_.frequencies, proportions(current.bins))
    report.prediction = Histogram(
        baseline.prediction.score,
        _edge_labels(baseline.prediction.edges),
        baseline.prediction.frequencies,
        proportions(counts.score_bins),
    )
    return report


def _merged(predicted: list[tuple[Any, ...]], truthful: list[tuple[Any, ...]]) -> list[GroupRates]:
    """Selection rates from every prediction of the window, true/false positive rates from feedback."""
    selection = {g.group: g for g in group_rates(predicted)}
    merged = []
    for rates in group_rates(truthful):
        base = selection.pop(rates.group, None)
        merged.append(
            GroupRates(
                rates.group,
                base.rows if base else 0,
                base.selection_rate if base else 0.0,
                rates.true_positive_rate,
                rates.false_positive_rate,
            )
        )
    return sorted([*merged, *selection.values()], key=lambda g: g.group)
