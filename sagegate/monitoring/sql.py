"""The checks' statistics as SQL, written once for both engines: DuckDB over the local JSON Lines
log, Athena (Trino) over Firehose's Parquet in AWS.

Every query is one pass over the window's rows that returns counts, means and histograms: the
numeric histograms use the baseline's fixed bin edges as plain comparisons (`x >= e1 AND x < e2`),
categories as equalities, so the engine bins and counts and nothing but a few numbers per feature
leaves it. What the dialects write differently is behind `Dialect`: reading an ISO 8601 time,
writing an instant, reading a logged feature (DuckDB's staged log has a struct typed for the model,
Athena's table a map of text: sagegate.monitoring.schema) and the partitions a query must name
(Athena's table is partitioned by model, injected, and the hour the line reached Firehose; every
reference to it constrains both). The rest (CASE, SUM, AVG, STDDEV_POP, COUNT, RANK() OVER, max_by,
JOIN) is the same text in both.

The log's columns the queries read: model, version, type (NULL for a prediction, 'feedback',
'rejected'), degraded, features (one value per logged feature), score, label, prediction_id,
outcome (text), rejected (the reasons per field), timestamp (ISO 8601 text; `ts` in the Glue table).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sagegate.keys import logged_hash
from sagegate.manifest import Feature, ModelManifest, Task
from sagegate.monitoring.baseline import Baseline, CategoricalProfile, NumericProfile
from sagegate.monitoring.schema import HOUR_FORMAT, TIME_COLUMN, UNKNOWN_MODEL

__all__ = [
    "ATHENA",
    "DUCKDB",
    "AccuracyQuery",
    "Dialect",
    "FeatureCounts",
    "GroupQuery",
    "ProfileQuery",
    "Scope",
    "Window",
    "WindowCounts",
    "group_expression",
    "literal",
    "logged_as_number",
    "quoted",
    "truth_expression",
    "versions_sql",
]


class Dialect(Protocol):
    @property
    def name(self) -> str: ...

    def logged_at(self) -> str:
        """When a line was logged, as a timestamp (the gateway's ISO 8601 text)."""
        ...

    def instant(self, at: datetime) -> str: ...

    def feature(self, name: str, *, number: bool) -> str:
        """A logged feature's value: a DOUBLE when `number` (logged_as_number), else text."""
        ...

    def rejected(self, name: str) -> str:
        """The reason a refused request gave for field `name` (NULL when it named none)."""
        ...

    def partitions(self, models: Sequence[str], start: datetime, end: datetime) -> str | None:
        """The predicate on the source's partitions for `models`' lines logged in [start, end), or
        None where the source has none (then the query says `model = ...` itself)."""
        ...


@dataclass(frozen=True)
class _DuckDB:
    """The local engine's staged log: features and rejected are structs typed for the model."""

    name: str = "duckdb"

    def logged_at(self) -> str:
        return f"CAST({quoted('timestamp')} AS TIMESTAMPTZ)"

    def instant(self, at: datetime) -> str:
        return f"CAST({literal(at.isoformat())} AS TIMESTAMPTZ)"

    def feature(self, name: str, *, number: bool) -> str:
        return f"features.{quoted(name)}"

    def rejected(self, name: str) -> str:
        return f"rejected.{quoted(name)}"

    def partitions(self, models: Sequence[str], start: datetime, end: datetime) -> str | None:
        return None


@dataclass(frozen=True)
class _Athena:
    """The Glue table of sagegate.monitoring.schema: features and rejected are map<string,string>."""

    name: str = "athena"

    def logged_at(self) -> str:
        # the column is `ts`: `timestamp` is a Hive keyword, which Firehose's conversion maps from the
        # line's "timestamp" key (schema.JSON_KEYS)
        return f"from_iso8601_timestamp({quoted(TIME_COLUMN)})"

    def instant(self, at: datetime) -> str:
        return f"from_iso8601_timestamp({literal(at.isoformat())})"

    def feature(self, name: str, *, number: bool) -> str:
        # element_at is NULL for a missing key (map[key] fails the query); TRY_CAST makes a value that
        # is not a number NULL, as DuckDB's typed read of the JSON line does
        value = f"element_at(features, {literal(name)})"
        return f"TRY_CAST({value} AS DOUBLE)" if number else value

    def rejected(self, name: str) -> str:
        return f"element_at(rejected, {literal(name)})"

    def partitions(self, models: Sequence[str], start: datetime, end: datetime) -> str | None:
        # `model` is injected: Athena takes only literals, conjunctively. `hour` is Firehose's
        # !{timestamp}: the arrival of the oldest record in the object a line was delivered in, so a
        # line logged just after the hour can sit in the hour before (its object began there), and a
        # late one in the next: one hour of margin each side (Firehose buffers 900 s at most)
        first = _hour(start) - timedelta(hours=1)
        last = _hour(end) + timedelta(hours=1)
        names = ", ".join(literal(m) for m in models)
        return (
            f"model IN ({names}) AND hour >= {literal(first.strftime(HOUR_FORMAT))} "
            f"AND hour <= {literal(last.strftime(HOUR_FORMAT))}"
        )


def _hour(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


DUCKDB: Dialect = _DuckDB()
ATHENA: Dialect = _Athena()


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _number(value: float) -> str:
    return repr(float(value))


def logged_as_number(feature: Feature) -> bool:
    """Whether the log's value of `feature` is read as a number (a hashed one is text)."""
    return feature.type.is_numeric and feature.sensitive != "hash"


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    label: str  # what the user asked for, e.g. "1h"

    def __str__(self) -> str:
        return f"{self.label} to {self.end.strftime('%Y-%m-%d %H:%M:%S')}Z"


@dataclass(frozen=True)
class Scope:
    """Which rows a check reads: one model version's, over a window, from `source` (the log as the
    engine names it: DuckDB's read_json(...) of the file, Athena's table)."""

    dialect: Dialect
    source: str
    manifest: ModelManifest
    version: str
    window: Window

    @property
    def rows(self) -> str:
        model = _model(self.dialect, self.manifest.name, self.window)
        return f"{model} AND version = {literal(self.version)} AND {_within(self.dialect, self.window)}"


def _within(dialect: Dialect, window: Window) -> str:
    at = dialect.logged_at()
    return f"{at} >= {dialect.instant(window.start)} AND {at} < {dialect.instant(window.end)}"


def _model(dialect: Dialect, model: str, window: Window) -> str:
    """`model`'s lines: its partitions where the source has them (which name the model), else by column."""
    return dialect.partitions([model], window.start, window.end) or f"model = {literal(model)}"


def versions_sql(dialect: Dialect, source: str, model: str, window: Window) -> str:
    """The versions of `model` with predictions in the window, and how many."""
    return (
        f"SELECT version, COUNT(*) AS n FROM {source} WHERE {_model(dialect, model, window)} AND type IS NULL "
        f"AND {_within(dialect, window)} GROUP BY version ORDER BY version"
    )


def _bins(expression: str, edges: Sequence[float]) -> list[str]:
    """One condition per bin of the fixed edges: bin i holds edges[i-1] <= x < edges[i]."""
    if not edges:
        return [f"{expression} IS NOT NULL"]
    conditions = [f"{expression} < {_number(edges[0])}"]
    conditions += [
        f"{expression} >= {_number(a)} AND {expression} < {_number(b)}" for a, b in itertools.pairwise(edges)
    ]
    conditions.append(f"{expression} >= {_number(edges[-1])}")
    return conditions


def _categories(feature: Feature, profile: CategoricalProfile, model: str) -> list[str]:
    """The baseline's categories as the log writes them (hashed for a `sensitive: hash` feature)."""
    if feature.sensitive == "hash":
        return [logged_hash(model, feature.name, c) for c in profile.categories]
    return list(profile.categories)


def _field(dialect: Dialect, feature: Feature) -> str:
    return dialect.feature(feature.name, number=logged_as_number(feature))


@dataclass
class FeatureCounts:
    present: int = 0
    mean: float | None = None
    std: float | None = None
    below_min: int = 0
    above_max: int = 0
    bins: list[int] = field(default_factory=list)  # numeric bins, or the categories then "other"
    rejected: int = 0


@dataclass
class WindowCounts:
    rows: int = 0  # predictions (degraded ones too: their features are traffic all the same)
    model_rows: int = 0  # predictions the model made (not degraded): the prediction checks' rows
    rejected_rows: int = 0
    features: dict[str, FeatureCounts] = field(default_factory=dict)
    score_bins: list[int] = field(default_factory=list)
    score_mean: float | None = None
    class_counts: dict[str, int] = field(default_factory=dict)


_PRED = "type IS NULL"
_MODEL = "type IS NULL AND NOT COALESCE(degraded, FALSE)"
_REJECTED = "type = 'rejected'"


def _count(condition: str) -> str:
    return f"SUM(CASE WHEN {condition} THEN 1 ELSE 0 END)"


class ProfileQuery:
    """The window's profile in one pass: counts, missing, range, histograms, refusals per feature,
    then the score histogram and the class counts of the model's own answers."""

    def __init__(self, scope: Scope, baseline: Baseline) -> None:
        manifest = scope.manifest
        self._columns: list[tuple[str, str, int]] = []  # (feature or "", stat, bin index)
        select: list[str] = []

        def add(expression: str, feature: str, stat: str, index: int = 0) -> None:
            select.append(f"{expression} AS a{len(select)}")
            self._columns.append((feature, stat, index))

        add(_count(_PRED), "", "rows")
        add(_count(_MODEL), "", "model_rows")
        add(_count(_REJECTED), "", "rejected_rows")
        logged = [f for f in manifest.features if f.sensitive != "drop"]
        # Each feature's value and refusal read once, in the inner query, as short columns: written in
        # every bin's condition instead, a wide model's query passes Athena's 262,144 characters.
        read = ["type", "degraded", "score", "label"]
        for i, feature in enumerate(logged):
            read += [f"{_field(scope.dialect, feature)} AS f{i}", f"{scope.dialect.rejected(feature.name)} AS r{i}"]
        for n, feature in enumerate(logged):
            x, reason = f"f{n}", f"r{n}"
            profile = baseline.features.get(feature.name)
            add(_count(f"{_PRED} AND {x} IS NOT NULL"), feature.name, "present")
            add(_count(f"{_REJECTED} AND {reason} IS NOT NULL"), feature.name, "rejected")
            if isinstance(profile, NumericProfile) and feature.sensitive != "hash":
                add(f"AVG(CASE WHEN {_PRED} THEN {x} END)", feature.name, "mean")
                add(f"STDDEV_POP(CASE WHEN {_PRED} THEN {x} END)", feature.name, "std")
                if profile.min is not None and profile.max is not None:
                    add(_count(f"{_PRED} AND {x} < {_number(profile.min)}"), feature.name, "below_min")
                    add(_count(f"{_PRED} AND {x} > {_number(profile.max)}"), feature.name, "above_max")
                for i, condition in enumerate(_bins(x, profile.edges)):
                    add(_count(f"{_PRED} AND {condition}"), feature.name, "bin", i)
            elif isinstance(profile, CategoricalProfile):
                for i, category in enumerate(_categories(feature, profile, manifest.name)):
                    add(_count(f"{_PRED} AND {x} = {literal(category)}"), feature.name, "bin", i)
        prediction = baseline.prediction
        for i, condition in enumerate(_bins("score", prediction.edges)):
            add(_count(f"{_MODEL} AND {condition}"), "", "score_bin", i)
        add(f"AVG(CASE WHEN {_MODEL} THEN score END)", "", "score_mean")
        for label in manifest.outputs.labels or []:
            add(_count(f"{_MODEL} AND label = {literal(label)}"), label, "class")
        self.sql = (
            f"SELECT {', '.join(select)} FROM (SELECT {', '.join(read)} FROM {scope.source} "
            f"WHERE {scope.rows} AND (type IS NULL OR type = 'rejected')) AS w"
        )
        self._categorical = {
            f.name: len(p.categories)
            for f in logged
            if isinstance(p := baseline.features.get(f.name), CategoricalProfile)
        }

    def parse(self, row: Sequence[Any]) -> WindowCounts:
        counts = WindowCounts()
        for (feature, stat, index), value in zip(self._columns, row, strict=True):
            if stat in ("rows", "model_rows", "rejected_rows"):
                setattr(counts, stat, int(value or 0))
            elif stat == "score_bin":
                counts.score_bins.append(int(value or 0))
            elif stat == "score_mean":
                counts.score_mean = None if value is None else float(value)
            elif stat == "class":
                counts.class_counts[feature] = int(value or 0)
            else:
                one = counts.features.setdefault(feature, FeatureCounts())
                if stat == "bin":
                    assert index == len(one.bins)
                    one.bins.append(int(value or 0))
                elif stat in ("mean", "std"):
                    setattr(one, stat, None if value is None else float(value))
                else:
                    setattr(one, stat, int(value or 0))
        for name, known in self._categorical.items():  # the "other" bin: present, but none of the known
            one = counts.features[name]
            one.bins.append(one.present - sum(one.bins[:known]))
        return counts


def truth_expression(manifest: ModelManifest, outcome: str = "outcome") -> str:
    """The feedback's outcome (text) as the truth: 1/0 for a binary model (its positive label, 1 or
    true), the label for a multiclass one (a label or a class index), a number for a regression.

    The log keeps a class index 1 and a label "1" as the same text, so a text that is a label is that
    label before it is an index (labels "1", "2", "3": "1" is the first class), as the baseline reads
    its holdout (sagegate.monitoring.baseline.class_index)."""
    outputs = manifest.outputs
    labels = outputs.labels or []
    if outputs.task is Task.REGRESSION:
        return f"TRY_CAST({outcome} AS DOUBLE)"
    if outputs.task is Task.BINARY:
        negative, positive = labels
        return (
            f"CASE WHEN {outcome} = {literal(positive)} THEN 1 WHEN {outcome} = {literal(negative)} THEN 0 "
            f"WHEN {outcome} IN ('1', 'true') THEN 1 WHEN {outcome} IN ('0', 'false') THEN 0 END"
        )
    by_label = " ".join(f"WHEN {outcome} = {literal(label)} THEN {literal(label)}" for label in labels)
    by_index = " ".join(f"WHEN {outcome} = {literal(str(i))} THEN {literal(label)}" for i, label in enumerate(labels))
    return f"CASE {by_label} {by_index} END"


def group_expression(dialect: Dialect, feature: Feature, profile: NumericProfile | CategoricalProfile | None) -> str:
    """A protected attribute's groups: its value (categories, booleans), else the baseline's bins."""
    x = _field(dialect, feature)
    if isinstance(profile, NumericProfile) and feature.sensitive != "hash" and feature.type.value != "bool":
        edges = profile.edges
        labels = (
            [f"< {edges[0]:g}"] + [f"{a:g} to {b:g}" for a, b in itertools.pairwise(edges)] + [f">= {edges[-1]:g}"]
            if edges
            else ["all"]
        )
        whens = " ".join(f"WHEN {c} THEN {literal(label)}" for c, label in zip(_bins(x, edges), labels, strict=True))
        return f"CASE {whens} ELSE '(missing)' END"
    if feature.type.value == "bool" and feature.sensitive != "hash":
        return f"CASE WHEN {x} >= 0.5 THEN 'true' WHEN {x} < 0.5 THEN 'false' ELSE '(missing)' END"
    return f"COALESCE(CAST({x} AS VARCHAR), '(missing)')"


def _labelled(scope: Scope, extra: str) -> str:
    """The window's predictions by the model joined with their latest feedback (WITH ... j)."""
    dialect, source, manifest, window = scope.dialect, scope.source, scope.manifest, scope.window
    at = dialect.logged_at()
    # feedback names its model when the client sent it; Firehose files the rest under UNKNOWN_MODEL
    partitions = dialect.partitions([manifest.name, UNKNOWN_MODEL], window.start, window.end)
    return (
        f"WITH p AS (SELECT prediction_id, score, label, {at} AS logged_at{extra} "
        f"FROM {source} WHERE {scope.rows} AND {_MODEL}), "
        f"f AS (SELECT prediction_id, max_by(outcome, {at}) AS outcome FROM {source} "
        f"WHERE {partitions + ' AND ' if partitions else ''}type = 'feedback' "
        f"AND {at} >= {dialect.instant(window.start)} GROUP BY prediction_id), "
        f"j AS (SELECT p.*, {truth_expression(manifest, 'f.outcome')} AS truth FROM p "
        f"JOIN f ON p.prediction_id = f.prediction_id) "
    )


@dataclass(frozen=True)
class AccuracyQuery:
    """Accuracy from feedback over a window, overall (`by_day` False) or per day: for a binary model
    the confusion counts at its threshold and the rank sum of the positives (AUC, Mann-Whitney, with
    ties at their average rank); for a multiclass one the hits; for a regression the absolute error."""

    sql: str
    task: Task

    @classmethod
    def build(cls, scope: Scope, *, by_day: bool) -> AccuracyQuery:
        manifest = scope.manifest
        task = manifest.outputs.task
        day = "date_trunc('day', logged_at)" if by_day else "NULL"
        head = _labelled(scope, "")
        if task is Task.BINARY:
            positive = literal((manifest.outputs.labels or ["", ""])[1])
            by, ties = ("PARTITION BY d ", "PARTITION BY d, score") if by_day else ("", "PARTITION BY score")
            sql = (
                head + f", r0 AS (SELECT {day} AS d, truth, label, score FROM j "
                "WHERE truth IS NOT NULL AND score IS NOT NULL), "
                f"r AS (SELECT d, truth, label, RANK() OVER ({by}ORDER BY score) "
                f"+ (COUNT(*) OVER ({ties}) - 1) / 2.0 AS rnk FROM r0) "
                f"SELECT d, COUNT(*) AS n, SUM(truth) AS positives, "
                f"{_count(f'truth = 1 AND label = {positive}')} AS tp, "
                f"{_count(f'truth = 0 AND label = {positive}')} AS fp, "
                f"{_count(f'truth = 1 AND label <> {positive}')} AS fn, "
                "SUM(CASE WHEN truth = 1 THEN rnk ELSE 0 END) AS rank_sum FROM r GROUP BY d ORDER BY d"
            )
        elif task is Task.MULTICLASS:
            sql = (
                head + f"SELECT {day} AS d, COUNT(*) AS n, {_count('label = truth')} AS hits "
                "FROM j WHERE truth IS NOT NULL GROUP BY 1 ORDER BY 1"
            )
        else:
            sql = (
                head + f"SELECT {day} AS d, COUNT(*) AS n, SUM(ABS(score - truth)) AS abs_error, "
                "SUM((score - truth) * (score - truth)) AS squared_error "
                "FROM j WHERE truth IS NOT NULL AND score IS NOT NULL GROUP BY 1 ORDER BY 1"
            )
        return cls(sql, task)


@dataclass(frozen=True)
class GroupQuery:
    """Per group of a protected attribute: (group, truth or NULL, predicted positive, rows). Without
    feedback (`labelled` False) every prediction of the window; with it, those joined to their truth."""

    sql: str

    @classmethod
    def build(cls, scope: Scope, baseline: Baseline, feature: Feature, *, labelled: bool) -> GroupQuery:
        manifest = scope.manifest
        groups = group_expression(scope.dialect, feature, baseline.features.get(feature.name))
        positive = literal((manifest.outputs.labels or ["", ""])[-1])
        if labelled:
            head = _labelled(scope, f", {groups} AS grp")
            sql = (
                head + f"SELECT grp, truth, CASE WHEN label = {positive} THEN 1 ELSE 0 END AS predicted, COUNT(*) AS n "
                "FROM j WHERE truth IS NOT NULL GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
            )
        else:
            sql = (
                f"SELECT {groups} AS grp, NULL AS truth, CASE WHEN label = {positive} THEN 1 ELSE 0 END AS predicted, "
                f"COUNT(*) AS n FROM {scope.source} WHERE {scope.rows} AND {_MODEL} GROUP BY 1, 3 ORDER BY 1, 3"
            )
        return cls(sql)
