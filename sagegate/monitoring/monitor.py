"""One model version over one window: the checks' queries run on an engine, judged against the
package's baseline, with what the report draws (histograms side by side, accuracy per day, rates
per protected group)."""

from __future__ import annotations

import itertools
import re
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
from sagegate.monitoring.sql import AccuracyQuery, GroupQuery, ProfileQuery, Scope, Window, WindowCounts, versions_sql
from sagegate.monitoring.statistics import proportions

__all__ = ["Histogram", "VersionReport", "monitor_version", "parse_window", "versions_in_window"]

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
    return {str(v): int(n) for v, n in engine.rows(versions_sql(engine.dialect, source, model, window))}


def monitor_version(
    engine: MonitoringEngine,
    manifest: ModelManifest,
    baseline: Baseline,
    *,
    window: Window,
    accuracy_window: Window,
) -> VersionReport:
    version = manifest.version
    source = engine.source(manifest)
    scope = Scope(engine.dialect, source, manifest, version, window)
    profile = ProfileQuery(scope, baseline)
    (row,) = engine.rows(profile.sql)
    counts = profile.parse(row)
    results = window_checks(manifest, baseline, counts, window)

    labelled = Scope(engine.dialect, source, manifest, version, accuracy_window)
    task = manifest.outputs.task
    (overall,) = engine.rows(AccuracyQuery.build(labelled, by_day=False).sql) or [(None, *([0] * 6))]
    results += accuracy_checks(manifest, baseline, accuracy_of(task, overall[1:]), accuracy_window)
    by_day = [
        (day.strftime("%Y-%m-%d"), accuracy_of(task, rest))
        for day, *rest in engine.rows(AccuracyQuery.build(labelled, by_day=True).sql)
        if day is not None
    ]

    bias: dict[str, list[GroupRates]] = {}
    if task is Task.BINARY:
        for feature in (f for f in manifest.features if f.protected):
            predicted = engine.rows(GroupQuery.build(scope, baseline, feature, labelled=False).sql)
            truthful = engine.rows(GroupQuery.build(labelled, baseline, feature, labelled=True).sql)
            results += bias_checks(
                manifest, feature.name, predicted, truthful, window=window, accuracy_window=accuracy_window
            )
            bias[feature.name] = group_rates([*predicted]) if not truthful else _merged(predicted, truthful)

    report = VersionReport(manifest.name, version, window, accuracy_window, counts, results, accuracy_by_day=by_day)
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
