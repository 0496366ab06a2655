"""The prediction log as Firehose delivers it and the Glue table on DuckDB, for the tests that run
the monitoring checks' Athena SQL (tests/unit/monitoring/test_athena.py) and the monitoring workflow
(tests/workflows/test_monitor.py).

- `fraud_log`: one fraud model's hour as the gateway logs it: clean then drifted traffic, features
  left out, refusals, feedback with and without its model, a truth that changed its mind, another
  model's lines, lines from two days before.
- `firehose_parquet`: lines through the gateway's `firehose_record`, then the Glue table's columns
  (sagegate.monitoring.schema), one Parquet file per `model=<m>/hour=<h>/` partition, some lines an
  hour late.
- `AthenaOnDuckDB`: a view of those files named as the table; a query comes in as Athena's text,
  transpiled by sqlglot from Trino to DuckDB, and answers as GetQueryResults gives it (a header
  row, every value as text, Athena's type names).

What this cannot prove: Athena's own engine (Trino's decimal and rounding rules, its printing of
values) and Firehose's conversion; the values are shaped as Athena's documentation gives them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import sqlglot

from sagegate.gateway.prediction_log import LoggedFeatures, firehose_record
from sagegate.local.data import generate_transactions
from sagegate.manifest import ModelManifest
from sagegate.monitoring.athena import athena_rows
from sagegate.monitoring.schema import COLUMNS, HOUR_FORMAT, JSON_KEYS, UNKNOWN_MODEL
from sagegate.packaging import BuiltPackage
from tests.unit.monitoring.conftest import NOW, scores, shifted

__all__ = [
    "AthenaOnDuckDB",
    "athena_text",
    "athena_type",
    "feedback_line",
    "firehose_parquet",
    "fraud_log",
    "prediction_lines",
]


def prediction_lines(
    manifest: ModelManifest,
    records: Sequence[dict[str, Any]],
    score: Sequence[float],
    *,
    start: datetime,
    spread: timedelta,
    prefix: str,
) -> list[dict[str, Any]]:
    """Prediction lines with the features as the gateway logs them: the request's values as given
    (booleans as booleans, integers as integers), left-out ones null, sensitive ones hashed."""
    logged = LoggedFeatures(manifest)
    threshold = manifest.outputs.threshold
    labels = manifest.outputs.labels
    lines = []
    for i, (record, p) in enumerate(zip(records, score, strict=True)):
        at = start + spread * (i / max(len(records), 1))
        label = None if labels is None else labels[1] if p >= threshold else labels[0]
        lines.append(
            {
                "prediction_id": f"{prefix}{i}",
                "model": manifest.name,
                "version": manifest.version,
                "variant": "v1",
                "features": logged(record, record),
                "prediction": p,
                "label": label,
                "confidence": max(p, 1 - p) if labels else None,
                "score": p,
                "latency_ms": 1.5,
                "cache_hit": i % 7 == 0,
                "degraded": False,
                "timestamp": at.isoformat(),
            }
        )
    return lines


def feedback_line(prediction: dict[str, Any], outcome: Any, *, named: bool, after: timedelta) -> dict[str, Any]:
    at = datetime.fromisoformat(prediction["timestamp"]) + after
    return {
        "type": "feedback",
        "prediction_id": prediction["prediction_id"],
        "outcome": outcome,
        "model": prediction["model"] if named else None,
        "timestamp": at.isoformat(),
    }


def fraud_log(fraud: BuiltPackage, manifest: ModelManifest, now: datetime = NOW) -> list[dict[str, Any]]:
    data = generate_transactions(1200, seed=31)
    rng = np.random.default_rng(4)
    records = [
        {k: v for k, v in r.items() if not (k in ("channel", "account_age_days") and rng.random() < 0.2)}
        for r in data.records
    ]
    records[600:] = shifted(data)[600:]  # the window's second half drifts
    lines = prediction_lines(
        manifest,
        records,
        scores(fraud, records).tolist(),
        start=now - timedelta(minutes=55),
        spread=timedelta(minutes=54),
        prefix="p",
    )
    truth = np.where(rng.random(len(lines)) < 0.2, 1 - data.label, data.label)
    feedback = [
        feedback_line(
            line, int(y) if i % 3 else ("fraud" if y else "legit"), named=i % 2 == 0, after=timedelta(seconds=30)
        )
        for i, (line, y) in enumerate(zip(lines, truth, strict=True))
        if i % 5
    ]
    feedback.append(
        feedback_line(lines[1], 1 - int(truth[1]), named=False, after=timedelta(minutes=40))
    )  # changed its mind
    early = prediction_lines(
        manifest,
        data.records[:40],
        scores(fraud, data.records[:40]).tolist(),
        start=now - timedelta(days=2),
        spread=timedelta(hours=30),
        prefix="e",
    )
    early_feedback = [
        feedback_line(x, int(y), named=True, after=timedelta(hours=1)) for x, y in zip(early, data.label, strict=False)
    ]
    other = [{**x, "model": "other", "prediction_id": "o" + x["prediction_id"]} for x in lines[:50]]
    refused = [
        {
            "type": "rejected",
            "model": manifest.name,
            "version": manifest.version,
            "variant": "v1",
            "rejected": {
                "amount": "expected a number, got str",
                **({"hour": "25 is above the maximum 23"} if i % 2 else {}),
            },
            "timestamp": (now - timedelta(minutes=30 - i)).isoformat(),
        }
        for i in range(15)
    ]
    return [*lines, *feedback, *early, *early_feedback, *other, *refused]


def arrived(line: dict[str, Any], index: int) -> str:
    """The partition Firehose puts the line in (its !{timestamp}: the arrival of the oldest record in
    the line's object): its own hour, but every 6th line logged in an hour's last ten minutes arrives
    in the next one, and every 7th logged in an hour's first three minutes shares an object begun in
    the hour before."""
    at = datetime.fromisoformat(line["timestamp"]).astimezone(UTC)
    shift = 1 if at.minute >= 50 and index % 6 == 0 else -1 if at.minute < 3 and index % 7 == 0 else 0
    return (at.replace(minute=0, second=0, microsecond=0) + timedelta(hours=shift)).strftime(HOUR_FORMAT)


ARROW = {
    "string": pa.string(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
    "map<string,string>": pa.map_(pa.string(), pa.string()),
}


def firehose_parquet(lines: Sequence[dict[str, Any]], root: Path) -> int:
    """The lines as Firehose delivers them: firehose_record, then the Glue table's columns, one
    Parquet file per (model, hour) partition. Answers how many lines arrived an hour late."""
    schema = pa.schema([(name, ARROW[kind]) for name, kind in COLUMNS])
    partitions: dict[tuple[str, str], list[dict[str, Any]]] = {}
    late = 0
    for i, line in enumerate(lines):
        record = orjson.loads(firehose_record(line))
        hour = arrived(line, i)
        late += hour != datetime.fromisoformat(line["timestamp"]).strftime(HOUR_FORMAT)
        row = {name: record.get(JSON_KEYS.get(name, name)) for name, _ in COLUMNS}  # as Firehose maps keys
        for name, kind in COLUMNS:
            if kind.startswith("map") and row[name] is not None:
                row[name] = list(row[name].items())
        partitions.setdefault((record.get("model") or UNKNOWN_MODEL, hour), []).append(row)
    for (model, hour), rows in partitions.items():
        folder = root / "predictions" / f"model={model}" / f"hour={hour}"
        folder.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "part.parquet")
    return late


class AthenaOnDuckDB:
    """The Glue table on DuckDB: a view of Firehose's files with their partitions, named as the table;
    queries come in as Athena's text and answer as GetQueryResults would, read by athena_rows."""

    def __init__(self, root: Path, database: str = "db", table: str = "predictions") -> None:
        self.db = duckdb.connect()
        files = str(root / "predictions" / "*" / "*" / "*.parquet")
        self.db.execute(f'CREATE SCHEMA "{database}"')
        self.db.execute(
            f'CREATE VIEW "{database}"."{table}" AS SELECT * FROM read_parquet(\'{files}\', hive_partitioning = true, '
            "hive_types = {'model': VARCHAR, 'hour': VARCHAR})"
        )

    def results(self, sql: str) -> dict[str, Any]:
        (duck,) = sqlglot.transpile(sql, read="trino", write="duckdb")
        relation = self.db.cursor().sql(duck)  # a cursor per query: the workflow's Map asks from several threads
        header = {"Data": [{"VarCharValue": name} for name in relation.columns]}
        rows = [
            {"Data": [{} if v is None else {"VarCharValue": athena_text(v)} for v in row]}
            for row in relation.fetchall()
        ]
        return {"types": [athena_type(str(t)) for t in relation.types], "rows": [header, *rows]}

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        answer = self.results(sql)
        return athena_rows(answer["types"], answer["rows"])


def athena_type(duck: str) -> str:
    base = duck.split("(", 1)[0]
    return {
        "HUGEINT": "bigint",
        "BIGINT": "bigint",
        "INTEGER": "integer",
        "DOUBLE": "double",
        "FLOAT": "real",
        "DECIMAL": "decimal",
        "VARCHAR": "varchar",
        "BOOLEAN": "boolean",
        "DATE": "date",
        "TIMESTAMP": "timestamp",
        "TIMESTAMP WITH TIME ZONE": "timestamp with time zone",
        '"NULL"': "unknown",
    }[base]


def athena_text(value: Any) -> str:
    """A value as Athena prints it in VarCharValue."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        text = value.astimezone(UTC) if value.tzinfo else value
        shown = f"{text:%Y-%m-%d %H:%M:%S}.{text.microsecond // 1000:03d}"
        return shown + " UTC" if value.tzinfo else shown
    if isinstance(value, date):
        return value.isoformat()
    assert isinstance(value, int | str | Decimal), type(value)
    return str(value)
