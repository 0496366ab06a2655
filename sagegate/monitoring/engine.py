"""The engines that run the checks' SQL. Locally, DuckDB reads the gateway's JSON Lines log; in AWS,
Athena reads Firehose's Parquet: the same queries rendered with sagegate.monitoring.sql.ATHENA over
the Glue table, run by the monitoring workflow (sagegate.monitoring.monitor.version_queries, then
judge_version over their rows read by sagegate.monitoring.athena).

Parsing JSON is what costs here, and a version's checks take several passes, so the DuckDB engine
parses the log once per model (and shape of its features): a streamed read_json that writes the
model's lines and the feedback, typed (times as timestamps), to a Parquet file in a scratch folder
(the shape Firehose gives the log in AWS), which the checks' queries then read by column. Nothing
holds the log in memory: DuckDB streams both steps within its `memory_limit`. What does grow with the
log is the accuracy checks' state (feedback by prediction, labelled rows sorted by score): about
130 bytes a labelled prediction, held up to `memory_limit` and spilled to the scratch folder beyond."""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any, Protocol

from sagegate.manifest import ModelManifest
from sagegate.monitoring.sql import DUCKDB, Dialect, literal, logged_as_number, quoted

__all__ = ["DuckDBEngine", "MonitoringEngine"]


class MonitoringEngine(Protocol):
    @property
    def dialect(self) -> Dialect: ...

    def source(self, manifest: ModelManifest | None) -> str:
        """The log as a relation, typed for `manifest`'s features (None: only the common columns)."""
        ...

    def rows(self, sql: str) -> list[tuple[Any, ...]]: ...


_COMMON = {
    "prediction_id": "VARCHAR",
    "model": "VARCHAR",
    "version": "VARCHAR",
    "type": "VARCHAR",
    "degraded": "BOOLEAN",
    "score": "DOUBLE",
    "label": "VARCHAR",
    "outcome": "VARCHAR",
    "timestamp": "VARCHAR",
}

# Rows per row group of the staged Parquet. Each of DuckDB's threads buffers a whole row group before
# it writes one, and at DuckDB's default (122,880) those buffers were the staging's peak and most of
# its spread from run to run (staging 10M predictions: 338 to 386 MB of RSS at the default, 224 at this).
_ROW_GROUP_ROWS = 20_000


class DuckDBEngine:
    """`log`: a JSON Lines file (or a glob of them). A value of the wrong type reads as NULL
    (ignore_errors), so a malformed line costs its fields, not the run."""

    def __init__(self, log: Path, *, threads: int | None = None, memory_limit: str = "1GB") -> None:
        import duckdb

        self.log = log
        scratch = Path(tempfile.mkdtemp(prefix="sagegate-monitor-"))
        config: dict[str, Any] = {
            "memory_limit": memory_limit,
            "temp_directory": str(scratch / "spill"),
            "preserve_insertion_order": False,  # the checks aggregate: order would only cost memory
        }
        if threads:
            config["threads"] = threads
        self._scratch = scratch
        self._db = duckdb.connect(config=config)
        self._staged: dict[tuple[str, str], str] = {}  # (model, features struct) -> its Parquet
        self._cleanup = weakref.finalize(self, _remove, self._db, scratch)

    @property
    def dialect(self) -> Dialect:
        return DUCKDB

    def source(self, manifest: ModelManifest | None) -> str:
        """The log typed for `manifest`'s features: the model's lines (every version's) and every
        feedback line, parsed once for all the versions whose features have the same shape."""
        columns = self._columns(manifest)
        if manifest is None:
            return self._read(columns)
        key = (manifest.name, columns["features"])
        if key not in self._staged:
            staged = self._scratch / f"log-{len(self._staged)}.parquet"
            names = ", ".join(quoted(c) for c in columns if c != "timestamp")
            self._db.execute(
                f"COPY (SELECT {names}, CAST({quoted('timestamp')} AS TIMESTAMPTZ) AS {quoted('timestamp')} "
                f"FROM {self._read(columns)} WHERE model = {literal(manifest.name)} OR type = 'feedback') "
                f"TO {literal(str(staged))} "
                f"(FORMAT PARQUET, COMPRESSION 'uncompressed', ROW_GROUP_SIZE {_ROW_GROUP_ROWS})"
            )
            self._staged[key] = f"read_parquet({literal(str(staged))})"
        return self._staged[key]

    def _columns(self, manifest: ModelManifest | None) -> dict[str, str]:
        columns = dict(_COMMON)
        if manifest is not None:
            logged = [f for f in manifest.features if f.sensitive != "drop"]
            typed = ", ".join(f"{quoted(f.name)} {'DOUBLE' if logged_as_number(f) else 'VARCHAR'}" for f in logged)
            columns["features"] = f"STRUCT({typed})"
            columns["rejected"] = "STRUCT(" + ", ".join(f"{quoted(f.name)} VARCHAR" for f in manifest.features) + ")"
        return columns

    def _read(self, columns: dict[str, str]) -> str:
        spec = ", ".join(f"{quoted(name)}: {literal(kind)}" for name, kind in columns.items())
        return (
            f"read_json({literal(str(self.log))}, format = 'newline_delimited', ignore_errors = true, "
            f"columns = {{{spec}}})"
        )

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return self._db.execute(sql).fetchall()

    def close(self) -> None:
        self._cleanup()


def _remove(db: Any, scratch: Path) -> None:
    db.close()
    shutil.rmtree(scratch, ignore_errors=True)
