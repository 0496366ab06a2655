"""Athena's answers as rows: GetQueryResults writes every value as text (`VarCharValue`, absent for
NULL) beside the column's type in `ResultSetMetadata`; the judge (sagegate.monitoring.monitor
.judge_version) takes typed values in SELECT order, as a local engine's rows are.

Numbers become int or float (a decimal too: the judge does float arithmetic), booleans bool,
`timestamp with time zone` an aware datetime in UTC (Athena prints `2026-12-01 00:00:00.000 UTC`
or an offset), `timestamp` a naive one, `date` a date; text and any other type stay text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["athena_rows"]

_INTEGERS = {"tinyint", "smallint", "integer", "int", "bigint"}
_FLOATS = {"double", "real", "float", "decimal"}


def _timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace(" ", "T", 1))


def _timestamp_tz(text: str) -> datetime:
    at, zone = text.rsplit(" ", 1)
    if zone in ("UTC", "Z"):
        return _timestamp(at).replace(tzinfo=UTC)
    if zone[0] in "+-":
        return _timestamp(at + zone).astimezone(UTC)
    return _timestamp(at).replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)


def _boolean(text: str) -> bool:
    return text.lower() == "true"


def _reader(kind: str) -> Callable[[str], Any]:
    base = kind.lower().split("(", 1)[0].strip()  # decimal(38,1), varchar(10), timestamp(3) ...
    if base in _INTEGERS:
        return int
    if base in _FLOATS:
        return float
    if base == "boolean":
        return _boolean
    if base == "date":
        return date.fromisoformat
    if base.startswith("timestamp"):
        return _timestamp_tz if kind.lower().endswith("with time zone") else _timestamp
    return str


def athena_rows(
    column_types: Sequence[str], rows: Sequence[Mapping[str, Any]], *, header: bool = True
) -> list[tuple[Any, ...]]:
    """GetQueryResults' `ResultSet.Rows` as typed tuples. `column_types` are its
    `ResultSetMetadata.ColumnInfo[*].Type`; `header`: the first row holds the column names (a
    SELECT's first page), not values. Pages after the first: `header=False`."""
    readers = [_reader(kind) for kind in column_types]
    typed = []
    for row in rows[1:] if header else rows:
        data = row["Data"]
        if len(data) != len(readers):
            raise ValueError(f"a row of {len(data)} values for {len(readers)} columns")
        typed.append(
            tuple(
                None if (text := cell.get("VarCharValue")) is None else read(text)
                for read, cell in zip(readers, data, strict=True)
            )
        )
    return typed
