"""The engines that run the checks' SQL. Locally, DuckDB reads the gateway's JSON Lines log where it
lies (read_json, streamed: its memory does not grow with the log); in AWS, Athena reads Firehose's
Parquet (not here yet: the same queries with sagegate.monitoring.sql.ATHENA and the Glue table)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from sagegate.manifest import ModelManifest
from sagegate.monitoring.sql import DUCKDB, Dialect, literal, quoted

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


class DuckDBEngine:
    """`log`: a JSON Lines file (or a glob of them). A value of the wrong type reads as NULL
    (ignore_errors), so a malformed line costs its fields, not the run."""

    def __init__(self, log: Path, *, threads: int | None = None, memory_limit: str = "1GB") -> None:
        import duckdb

        self.log = log
        self._db = duckdb.connect(config={"memory_limit": memory_limit, **({"threads": threads} if threads else {})})

    @property
    def dialect(self) -> Dialect:
        return DUCKDB

    def source(self, manifest: ModelManifest | None) -> str:
        columns = dict(_COMMON)
        if manifest is not None:
            logged = [f for f in manifest.features if f.sensitive != "drop"]
            typed = ", ".join(
                f"{quoted(f.name)} {'DOUBLE' if f.type.is_numeric and f.sensitive != 'hash' else 'VARCHAR'}"
                for f in logged
            )
            columns["features"] = f"STRUCT({typed})"
            columns["rejected"] = "STRUCT(" + ", ".join(f"{quoted(f.name)} VARCHAR" for f in manifest.features) + ")"
        spec = ", ".join(f"{quoted(name)}: {literal(kind)}" for name, kind in columns.items())
        return (
            f"read_json({literal(str(self.log))}, format = 'newline_delimited', ignore_errors = true, "
            f"columns = {{{spec}}})"
        )

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return self._db.execute(sql).fetchall()

    def close(self) -> None:
        self._db.close()
