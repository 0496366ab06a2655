"""The Athena SQL computes what the local engine computes.

One log, written as the gateway writes it (clean and drifted traffic, a feature left out, refusals,
feedback with and without its model, a truth that changed its mind, another model's lines, lines
before the window), is kept twice: as the JSON Lines file the local engine reads, and through the
gateway's `firehose_record` as Parquet in the Glue table's schema (sagegate.monitoring.schema), laid
out as Firehose partitions it (`predictions/model=<m>/hour=<h>/`, some lines in the next hour's
partition: late arrivals). The Athena text of `version_queries` is transpiled by sqlglot from Trino
to DuckDB and run over a view of those files named as the Glue table; its answers go through
`athena_rows` in the shape GetQueryResults gives them (a header row, every value as text beside
Athena's type names), are judged by `judge_version`, and must equal what `monitor_version` judges
on the local engine, check by check.

sqlglot maps every Trino function the queries use to DuckDB (from_iso8601_timestamp to a cast,
element_at to a map lookup, max_by to arg_max): no macros are needed. What this cannot prove:
Athena's own engine (Trino's decimal and rounding rules, its printing of values) and Firehose's
conversion; the values are shaped as Athena's documentation gives them.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import sqlglot
from sklearn.linear_model import LinearRegression
from sqlglot import exp
from sqlglot.errors import ErrorLevel

from sagegate.manifest import ModelManifest
from sagegate.monitoring.athena import athena_rows
from sagegate.monitoring.baseline import Baseline
from sagegate.monitoring.checks import CheckResult
from sagegate.monitoring.engine import DuckDBEngine
from sagegate.monitoring.monitor import (
    VersionReport,
    judge_version,
    monitor_version,
    version_queries,
    versions_from_rows,
    window_ending,
)
from sagegate.monitoring.sql import ATHENA, versions_sql
from sagegate.packaging import BuiltPackage, build_package
from sagegate.packaging.builder import onnx_predict
from tests.athena_on_duckdb import AthenaOnDuckDB, feedback_line, firehose_parquet, fraud_log, prediction_lines
from tests.unit.monitoring.conftest import NOW, TIERS, Tiers, feedback_lines, multiclass_lines, tier_data

TABLE = '"db"."predictions"'
NOW_TEXT = "2026-12-01 12:00:00.000 UTC"  # NOW as Athena prints a timestamp with time zone
WINDOW = window_ending(NOW, "1h")
ACCURACY_WINDOW = window_ending(NOW, "7d")


# -- the log, as the gateway writes it ---------------------------------------------------------------


def _price_package(tmp_path: Path) -> tuple[BuiltPackage, list[dict[str, Any]]]:
    """A regression model (tests/unit/monitoring/test_regression.py's) and a window whose truth drifted
    away from it; its feedback names no model (Firehose files it under UNKNOWN_MODEL)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 2))
    y = 3 * x[:, 0] - 2 * x[:, 1] + rng.normal(0, 0.5, 2000)
    held = rng.normal(size=(500, 2))
    built = build_package(
        LinearRegression().fit(x, y),
        framework="sklearn",
        name="price",
        version="1",
        features=[{"name": "x1", "type": "float"}, {"name": "x2", "type": "float", "required": False, "default": 0.0}],
        task="regression",
        sample=[{"x1": 0.1, "x2": 0.2}],
        output_dir=tmp_path / "price",
        training_data=x,
        holdout={"x1": held[:, 0], "x2": held[:, 1], "y": 3 * held[:, 0] - 2 * held[:, 1]},
        label_column="y",
    )
    live = rng.normal(size=(800, 2)) + 0.3
    value = onnx_predict(built.path / "model.onnx", {"input": live.astype(np.float32)}, "variable").reshape(-1)
    records = [{"x1": a, "x2": b} if i % 9 else {"x1": a} for i, (a, b) in enumerate(live.tolist())]
    lines = prediction_lines(
        built.manifest,
        records,
        value.tolist(),
        start=NOW - timedelta(minutes=58),
        spread=timedelta(minutes=57),
        prefix="r",
    )
    truth = 3 * live[:, 0] - 2 * live[:, 1] + 2.0
    feedback = [
        feedback_line(line, t, named=False, after=timedelta(seconds=2))
        for line, t in zip(lines, truth.tolist(), strict=True)
    ]
    return built, [*lines, *feedback]


def _tiers_log(tiers: Tiers) -> list[dict[str, Any]]:
    """A multiclass model's hour (tests/unit/monitoring/test_multiclass.py's): clean then shifted
    traffic (the class mix moves), a feature left out, feedback by label and by class index, with and
    without its model, a flipped share of it, a truth that changed its mind, and a degraded answer."""
    records, truth = tier_data(1000, seed=40)
    shifted_records, shifted_truth = tier_data(500, seed=41, spend_shift=1.2)
    records[500:], truth[500:] = shifted_records, shifted_truth
    records = [{k: v for k, v in r.items() if not (k == "tenure" and i % 7 == 0)} for i, r in enumerate(records)]
    lines = multiclass_lines(
        tiers.package, records, start=NOW - timedelta(minutes=59), spread=timedelta(minutes=58), prefix="m"
    )
    lines[3] = {**lines[3], "degraded": True, "label": None, "confidence": None, "score": None, "prediction": "silver"}
    rng = np.random.default_rng(5)
    noisy = np.where(rng.random(len(truth)) < 0.3, (truth + rng.integers(1, 3, len(truth))) % 3, truth)
    given = [None if i % 4 == 0 else TIERS[t] if i % 3 else int(t) for i, t in enumerate(noisy.tolist())]
    feedback = feedback_lines(lines, given, after=timedelta(seconds=40))
    for i, line in enumerate(feedback):
        if i % 2:
            line["model"] = None  # Firehose files it under UNKNOWN_MODEL
    changed = feedback_lines(lines[5:6], [(int(noisy[5]) + 1) % 3], after=timedelta(minutes=20))
    return [*lines, *feedback, *changed]


# -- the two copies of the log -------------------------------------------------------------------------


# -- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fraud_hashed(fraud: BuiltPackage) -> ModelManifest:
    """The fraud model with its merchant category hashed in the log and card_present dropped from it."""
    marks = {"merchant_category": {"sensitive": "hash"}, "card_present": {"sensitive": "drop"}}
    features = [f.model_copy(update=marks.get(f.name, {})) for f in fraud.manifest.features]
    return fraud.manifest.model_copy(update={"features": features})


@pytest.fixture(scope="module")
def logs(fraud: BuiltPackage, fraud_hashed: ModelManifest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("athena")
    price, price_lines = _price_package(root)
    lines = [*fraud_log(fraud, fraud_hashed), *price_lines]
    jsonl = root / "predictions.jsonl"
    jsonl.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    late = firehose_parquet(lines, root / "s3")
    assert late > 50
    local, athena = DuckDBEngine(jsonl), AthenaOnDuckDB(root / "s3")
    yield {"local": local, "athena": athena, "price": price, "root": root}
    local.close()


def _assert_same(athena: list[CheckResult], local: list[CheckResult]) -> None:
    assert [(r.check, r.feature, r.statistic, r.status) for r in athena] == [
        (r.check, r.feature, r.statistic, r.status) for r in local
    ]
    for a, b in zip(athena, local, strict=True):
        assert (a.value is None) == (b.value is None), (a, b)
        if a.value is not None and b.value is not None:
            assert a.value == pytest.approx(b.value, rel=1e-9, abs=1e-9), (a, b)


def _assert_close(a: Any, b: Any) -> None:
    """Equal, floats to 1e-9 (the engines sum in different orders)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_close(a[key], b[key])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_close(x, y)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-9)
    else:
        assert a == b


@pytest.fixture(scope="module")
def tiers_logs(tiers: Tiers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("athena-tiers")
    lines = _tiers_log(tiers)
    jsonl = root / "predictions.jsonl"
    jsonl.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    assert firehose_parquet(lines, root / "s3") > 10
    local = DuckDBEngine(jsonl)
    yield {"local": local, "athena": AthenaOnDuckDB(root / "s3")}
    local.close()


# -- the proof ----------------------------------------------------------------------------------------


def _both(
    logs: Any, manifest: ModelManifest, baseline: Baseline, end: datetime = NOW
) -> tuple[VersionReport, VersionReport, dict[str, str]]:
    windows = {"window": window_ending(end, "1h"), "accuracy_window": window_ending(end, "7d")}
    local = monitor_version(logs["local"], manifest, baseline, **windows)
    queries = version_queries(ATHENA, TABLE, manifest, baseline, **windows)
    results = {name: logs["athena"].rows(sql) for name, sql in queries.items()}
    athena = judge_version(manifest, baseline, results, **windows)
    return local, athena, queries


# a window that ends on the hour, and one whose last lines' late ones arrive after its own last hour
@pytest.mark.parametrize("end", [NOW, NOW - timedelta(minutes=7)], ids=["on-the-hour", "within-an-hour"])
def test_athena_judges_a_binary_model_as_the_local_engine_does(
    logs: Any, fraud_hashed: ModelManifest, fraud_baseline: Baseline, end: datetime
) -> None:
    local, athena, queries = _both(logs, fraud_hashed, fraud_baseline, end)
    assert set(queries) == {
        "profile",
        "accuracy",
        "accuracy_by_day",
        "bias:is_foreign:predicted",
        "bias:is_foreign:labelled",
    }
    statuses = {r.status for r in local.results}
    assert {"ok", "fail"} <= statuses  # the drifted half fails something, the rest passes
    assert local.counts.rejected_rows > 0 and (local.counts.rows == 1200) is (end == NOW)
    hashed = local.counts.features["merchant_category"]  # known categories found in their hashed form
    assert hashed.present == local.counts.rows == sum(hashed.bins) and hashed.bins[-1] < hashed.present
    _assert_same(athena.results, local.results)
    _assert_close(dataclasses.asdict(athena.counts), dataclasses.asdict(local.counts))
    assert [(d, a.rows) for d, a in athena.accuracy_by_day] == [(d, a.rows) for d, a in local.accuracy_by_day] != []
    assert athena.bias == local.bias and athena.bias["is_foreign"]


def test_athena_judges_a_regression_model_as_the_local_engine_does(logs: Any) -> None:
    price: BuiltPackage = logs["price"]
    assert price.baseline is not None
    local, athena, queries = _both(logs, price.manifest, Baseline.read(price.baseline))
    assert set(queries) == {"profile", "accuracy", "accuracy_by_day"}
    by = {(r.feature, r.statistic): r for r in local.results}
    assert by["prediction", "mae_rise"].failed and local.counts.features["x2"].present < local.counts.rows
    _assert_same(athena.results, local.results)
    _assert_close(dataclasses.asdict(athena.counts), dataclasses.asdict(local.counts))


@pytest.mark.parametrize("end", [NOW, NOW - timedelta(minutes=7)], ids=["on-the-hour", "within-an-hour"])
def test_athena_judges_a_multiclass_model_as_the_local_engine_does(
    tiers_logs: Any, tiers: Tiers, end: datetime
) -> None:
    assert tiers.package.baseline is not None
    baseline = Baseline.read(tiers.package.baseline)
    local, athena, queries = _both(tiers_logs, tiers.package.manifest, baseline, end)
    assert set(queries) == {"profile", "accuracy", "accuracy_by_day"}
    by = {(r.feature, r.statistic): r for r in local.results}
    assert by["prediction", "class_rate_tvd"].failed and by["prediction", "accuracy_drop"].failed
    assert not by["region", "psi"].failed  # the shift moved spend, not region
    assert sum(local.counts.class_counts.values()) == local.counts.model_rows == local.counts.rows - 1
    _assert_same(athena.results, local.results)
    _assert_close(dataclasses.asdict(athena.counts), dataclasses.asdict(local.counts))
    assert (
        [(d, a.rows, a.metrics) for d, a in athena.accuracy_by_day]
        == [(d, a.rows, pytest.approx(a.metrics, rel=1e-12)) for d, a in local.accuracy_by_day]
        != []
    )


def test_the_versions_query_agrees(logs: Any, fraud_hashed: ModelManifest) -> None:
    ours = versions_from_rows(
        logs["local"].rows(versions_sql(logs["local"].dialect, logs["local"].source(None), "fraud", WINDOW))
    )
    theirs = versions_from_rows(logs["athena"].rows(versions_sql(ATHENA, TABLE, "fraud", WINDOW)))
    assert ours == theirs == {fraud_hashed.version: 1200}


# -- what Athena accepts ------------------------------------------------------------------------------


def _model_constraints(query: Any) -> Iterator[tuple[exp.Table, Any]]:
    for table in query.find_all(exp.Table):
        if table.name == "predictions":
            select = table.find_ancestor(exp.Select)
            assert select is not None
            yield table, select.args.get("where")


def _conjuncts(condition: Any) -> list[Any]:
    return list(condition.flatten()) if isinstance(condition, exp.And) else [condition]


def test_every_athena_query_parses_as_trino_and_names_its_partitions(
    logs: Any, fraud_hashed: ModelManifest, fraud_baseline: Baseline
) -> None:
    queries = version_queries(
        ATHENA, TABLE, fraud_hashed, fraud_baseline, window=WINDOW, accuracy_window=ACCURACY_WINDOW
    )
    queries["versions"] = versions_sql(ATHENA, TABLE, "fraud", WINDOW)
    for name, sql in queries.items():
        (query,) = sqlglot.parse(sql, read="trino", error_level=ErrorLevel.RAISE)
        assert query is not None
        references = list(_model_constraints(query))
        assert references, name
        for table, where in references:
            assert table.db == "db", name
            assert where is not None, name
            conditions = _conjuncts(where.this)
            models = [c for c in conditions if isinstance(c, exp.In) and c.this.name == "model"]
            assert len(models) == 1 and all(
                isinstance(v, exp.Literal) and v.is_string for v in models[0].expressions
            ), name
            hours = {type(c) for c in conditions if isinstance(c, exp.GTE | exp.LTE) and c.this.name == "hour"}
            assert hours == {exp.GTE, exp.LTE}, name
            for either in where.find_all(exp.Or):  # no OR may reach the model column
                assert all(c.name != "model" for c in either.find_all(exp.Column)), name


# -- the judge without an engine ----------------------------------------------------------------------


def test_the_judge_runs_without_duckdb(logs: Any, fraud: BuiltPackage, fraud_baseline: Baseline) -> None:
    """The Lambda's path, in a fresh interpreter where duckdb cannot be imported: GetQueryResults'
    pages read by athena_rows, judged by judge_version, as the workflow will."""
    manifest = fraud.manifest
    queries = version_queries(ATHENA, TABLE, manifest, fraud_baseline, window=WINDOW, accuracy_window=ACCURACY_WINDOW)
    pages = {name: logs["athena"].results(sql) for name, sql in queries.items()}
    (logs["root"] / "pages.json").write_bytes(orjson.dumps(pages))
    assert fraud.baseline is not None
    probe = f"""
import sys
sys.modules["duckdb"] = None  # importing it now fails
import orjson
from datetime import datetime
from pathlib import Path
from sagegate.manifest import ModelManifest
from sagegate.monitoring.athena import athena_rows
from sagegate.monitoring.baseline import Baseline
from sagegate.monitoring.monitor import judge_version, window_ending
pages = orjson.loads(open({str(logs["root"] / "pages.json")!r}, "rb").read())
results = {{name: athena_rows(page["types"], page["rows"]) for name, page in pages.items()}}
manifest = ModelManifest.read(Path({str(fraud.path)!r}))
end = datetime.fromisoformat({NOW.isoformat()!r})
report = judge_version(manifest, Baseline.read(Path({str(fraud.baseline)!r})), results,
                       window=window_ending(end, "1h"), accuracy_window=window_ending(end, "7d"))
print(len(report.results), len(report.accuracy_by_day), "duckdb" in sys.modules and sys.modules["duckdb"] is not None)
"""
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=root, check=False)
    assert done.returncode == 0, done.stderr
    local = monitor_version(logs["local"], manifest, fraud_baseline, window=WINDOW, accuracy_window=ACCURACY_WINDOW)
    assert done.stdout.split() == [str(len(local.results)), str(len(local.accuracy_by_day)), "False"]


def test_athena_rows_types_each_kind_of_value() -> None:
    types = [
        "bigint",
        "double",
        "decimal(38,1)",
        "boolean",
        "varchar",
        "timestamp(3) with time zone",
        "date",
        "unknown",
    ]
    header = {"Data": [{"VarCharValue": f"c{i}"} for i in range(len(types))]}
    values = ["7", "1.0E-4", "12.5", "true", "x", "2026-12-01 01:00:00.000 +01:00", "2026-12-01"]
    row = {"Data": [{"VarCharValue": v} for v in values] + [{}]}
    nulls: dict[str, Any] = {"Data": [{} for _ in types]}
    (typed, empty) = athena_rows(types, [header, row, nulls])
    assert typed == (7, 0.0001, 12.5, True, "x", datetime(2026, 12, 1, tzinfo=UTC), date(2026, 12, 1), None)
    assert empty == (None,) * len(types)
    (utc,) = athena_rows(
        ["timestamp with time zone", "timestamp"],
        [{"Data": [{"VarCharValue": NOW_TEXT}, {"VarCharValue": NOW_TEXT.removesuffix(" UTC")}]}],
        header=False,
    )
    assert utc == (NOW, NOW.replace(tzinfo=None)) and utc[0].strftime("%Y-%m-%d") == "2026-12-01"
    with pytest.raises(ValueError, match="2 columns"):
        athena_rows(["bigint", "bigint"], [header, {"Data": [{"VarCharValue": "1"}]}])


def test_a_wide_models_profile_fits_athenas_query_length(fraud: BuiltPackage, fraud_baseline: Baseline) -> None:
    """Athena refuses a query over 262,144 characters: each feature is read once in the profile's
    inner query, so its bins cost a short column name each (before: ~3 KB per numeric feature, a
    limit near 85 features). At the fraud model's cost per feature, 200 features fit."""
    queries = version_queries(
        ATHENA, TABLE, fraud.manifest, fraud_baseline, window=WINDOW, accuracy_window=ACCURACY_WINDOW
    )
    per_feature = len(queries["profile"]) / len(fraud.manifest.features)
    assert per_feature * 200 < 262_144, per_feature
    assert "element_at(features" not in queries["profile"].split(" FROM (SELECT ", 1)[0]  # only inside
