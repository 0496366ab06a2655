"""The batch engine's validation: whole chunks against a manifest, by the rules of every other path.

Parquet columns carry types, so they are checked as JSON values are (a string column for a number is
refused, a number for a category too). CSV carries text: every column is read as text and each cell
is parsed by its feature's rule, as the server parses a CSV body, so "02134" stays "02134" and a bad
cell anywhere is that row's error, not the run's. JSON Lines records are checked record by record
by the server's own code. In every case the first rule a row breaks (features in the manifest's
order) is its reason, worded as everywhere else (`sagegate.validation.Reason`); the valid rows go
through the same `FeaturePipeline.transform_block` as real-time requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sagegate.features import FeaturePipeline, Rejections, number_failures
from sagegate.manifest import FeatureType, Impute
from sagegate.validation import (
    EXACT_INT,
    FALSE_WORDS,
    MISSING,
    NUMBER_PATTERN,
    TRUE_WORDS,
    FeatureRule,
    Reason,
    RecordError,
    beyond_exact,
)

__all__ = ["ColumnBatch", "RowError", "validate_columns", "validate_records"]


@dataclass(frozen=True)
class RowError:
    row: int
    field: str | None
    reason: str


@dataclass
class ColumnBatch:
    inputs: dict[str, np.ndarray]  # the model's inputs for the valid rows
    valid: np.ndarray  # bool per input row
    errors: list[RowError]

    @property
    def size(self) -> int:
        """How many rows the inputs hold (the valid ones)."""
        return len(next(iter(self.inputs.values()))) if self.inputs else 0

    @property
    def matrix(self) -> np.ndarray:
        """A matrix model's one input."""
        (only,) = self.inputs.values()
        return only

    def select(self, keep: np.ndarray) -> dict[str, np.ndarray]:
        """The inputs of some of the valid rows (`keep`: a mask over them)."""
        return {name: values[keep] for name, values in self.inputs.items()}


def _arrow_type_name(kind: pa.DataType) -> str:
    """An Arrow column's values named as the JSON values they would be."""
    if pa.types.is_boolean(kind):
        return "bool"
    if pa.types.is_integer(kind):
        return "int"
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "float"
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return "list"
    if pa.types.is_struct(kind) or pa.types.is_map(kind):
        return "dict"
    return "str"


def _plain(column: pa.ChunkedArray) -> pa.ChunkedArray:
    kind = column.type
    if pa.types.is_dictionary(kind):
        return column.cast(kind.value_type)
    if pa.types.is_large_string(kind):
        return column.cast(pa.string())
    return column


def _flags(mask: Any, *, null: bool = False) -> np.ndarray:
    """An Arrow boolean array as a writable numpy one, nulls as `null`."""
    return np.array(pc.fill_null(mask, null).to_numpy(zero_copy_only=False), dtype=bool)


def _missing(column: pa.ChunkedArray, *, text: bool) -> np.ndarray:
    missing = pc.is_null(column)
    if text:
        missing = pc.or_(missing, pc.equal(column, ""))
    return _flags(missing, null=True)


def _texts(column: pa.ChunkedArray) -> np.ndarray:
    return np.array(column.to_pylist(), dtype=object)


def _numbers(
    rule: FeatureRule, column: pa.ChunkedArray | None, n: int, rejections: Rejections, *, text: bool
) -> np.ndarray:
    """A numeric feature's values (NaN where missing and imputed), its bad rows rejected."""
    name = rule.name
    values = np.full(n, np.nan)
    if column is None:
        missing = np.ones(n, dtype=bool)
    else:
        column = _plain(column)
        kind = column.type
        missing = _missing(column, text=text and pa.types.is_string(kind))
        given = ~missing
        if text and pa.types.is_string(kind):
            values = _parsed_numbers(rule, column, given, rejections)
        elif pa.types.is_boolean(kind) and rule.type is not FeatureType.BOOL:
            rejections.reject(given, name, Reason.expected(rule.type, "bool"))
        elif any(test(kind) for test in (pa.types.is_boolean, pa.types.is_integer, pa.types.is_floating)) or (
            pa.types.is_decimal(kind)
        ):
            values = np.asarray(
                pc.cast(column, pa.float64(), safe=False).to_numpy(zero_copy_only=False), dtype=np.float64
            )
        else:
            rejections.reject(given, name, Reason.expected(rule.type, _arrow_type_name(kind)))
        values = np.where(missing, np.nan, values)
        _reject_unexact(rule, column, values, ~missing, rejections)
    present = ~missing
    if rule.type is FeatureType.BOOL:
        not_bool = present & (values != 0) & (values != 1)
        rejections.reject(not_bool, name, lambda i: Reason.not_boolean(float(values[i])))
    else:
        for bad, reason in number_failures(rule, np.where(present, values, 0.0)):
            rejections.reject(present & bad, name, reason)
    if rule.fill is not MISSING:
        values[missing] = float(rule.fill)
    elif not rule.imputed:
        rejections.reject(missing, name, Reason.REQUIRED)
    return values


def _reject_unexact(
    rule: FeatureRule, column: pa.ChunkedArray, values: np.ndarray, present: np.ndarray, rejections: Rejections
) -> None:
    """What a double cannot tell, decided on the cell itself as `FeatureRule.check_number` decides
    it: an integer that rounds to exactly +-2**53 but is beyond it (2**53 + 1)."""
    if rule.type is not FeatureType.INT:
        return
    edge = present & (np.abs(np.nan_to_num(values)) == EXACT_INT)
    if edge.any():
        cells = _texts(column)
        rejections.reject(edge & np.array([beyond_exact(c) for c in cells]), rule.name, Reason.BEYOND_EXACT)


def _parsed_numbers(
    rule: FeatureRule, column: pa.ChunkedArray, given: np.ndarray, rejections: Rejections
) -> np.ndarray:
    """Text cells parsed as `FeatureRule.parse` parses them (the same words, the same number grammar)."""
    n = len(given)
    if rule.type is FeatureType.BOOL:
        word = pc.utf8_lower(pc.utf8_trim_whitespace(column))
        true = _flags(pc.is_in(word, pa.array(sorted(TRUE_WORDS))))
        false = _flags(pc.is_in(word, pa.array(sorted(FALSE_WORDS))))
        bad = given & ~true & ~false
        if bad.any():
            texts = _texts(column)
            rejections.reject(bad, rule.name, lambda i: Reason.text_not(rule.type, texts[i]))
        return np.where(true, 1.0, 0.0)
    matches = _flags(pc.match_substring_regex(column, NUMBER_PATTERN))
    bad = given & ~matches
    if bad.any():
        texts = _texts(column)
        rejections.reject(bad, rule.name, lambda i: Reason.text_not(rule.type, texts[i]))
    readable = pc.if_else(pa.array(matches & given), column, pa.scalar(None, pa.string()))
    values = np.asarray(pc.cast(readable, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    return values if len(values) == n else np.full(n, np.nan)


def _categories(
    rule: FeatureRule,
    column: pa.ChunkedArray | None,
    n: int,
    rejections: Rejections,
    *,
    text: bool,
    as_text: bool = False,
) -> np.ndarray:
    """The feature's category codes (-1: outside the categories), computed by Arrow, not per value;
    or (`as_text`, for a model that encodes them itself) its values, missing ones filled."""
    feature = rule.feature
    encoded = pa.array(feature.encoded_categories, type=pa.string())
    if column is None:
        strings, missing = pa.nulls(n, type=pa.string()), np.ones(n, dtype=bool)
    else:
        column = _plain(column)
        if not pa.types.is_string(column.type):
            missing = _missing(column, text=False)
            rejections.reject(~missing, rule.name, Reason.expected(rule.type, _arrow_type_name(column.type)))
            strings = pa.nulls(n, type=pa.string())
        else:
            missing = _missing(column, text=text)
            strings = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if rule.categories is not None:
        allowed = pc.is_in(strings, value_set=pa.array(feature.categories, type=pa.string()))
        unknown = ~missing & ~_flags(allowed)
        if unknown.any():
            texts = _texts(strings)
            rejections.reject(unknown, rule.name, lambda i: Reason.not_a_category(texts[i], feature.categories or []))
    codes = np.asarray(
        pc.fill_null(pc.index_in(strings, value_set=encoded), -1).to_numpy(zero_copy_only=False), dtype=np.int64
    )
    fill = rule.fill if rule.fill is not MISSING else None
    if fill is None and rule.imputed:
        fill = next(t.value for t in feature.transforms if isinstance(t, Impute))
    if fill is None:
        rejections.reject(missing, rule.name, Reason.REQUIRED)
    if as_text:
        values = _texts(strings)
        values[missing] = fill
        return values
    if fill is not None:
        position = feature.encoded_categories.index(str(fill)) if str(fill) in feature.encoded_categories else -1
        codes = np.where(missing, position, codes)
    return codes


def validate_columns(pipeline: FeaturePipeline, table: pa.Table, *, text: bool = False) -> ColumnBatch:
    """The model input for the rows of `table` that pass the manifest, and why the others did not.
    `text`: the columns are CSV text, parsed by the features' rules (else typed, as JSON values)."""
    n = table.num_rows
    rejections = Rejections(n)
    names = set(table.column_names)
    numeric: dict[str, np.ndarray] = {}
    categorical: dict[str, np.ndarray] = {}
    for feature in pipeline.features:  # the manifest's order: a row's first bad feature is its reason
        rule = pipeline.rules[feature.name]
        column = table.column(feature.name) if feature.name in names else None
        if feature.type.is_numeric:
            numeric[feature.name] = _numbers(rule, column, n, rejections, text=text)
        else:
            categorical[feature.name] = _categories(rule, column, n, rejections, text=text, as_text=pipeline.columns)
    valid = rejections.valid
    ordered = [numeric[f.name] for f in pipeline.numeric_features]
    block = np.column_stack(ordered)[valid] if ordered else None
    kept = [categorical[f.name][valid] for f in pipeline.categorical_features]
    return ColumnBatch(pipeline.block_inputs(block, kept, int(valid.sum())), valid, _errors(rejections))


def validate_records(pipeline: FeaturePipeline, records: Sequence[Any], *, part: int = 1024) -> ColumnBatch:
    """JSON Lines records, checked by the server's own record path (`rows_from_records`): a part
    without errors at its speed, a part with errors record by record, each bad one set aside. Keys
    that are not features (ids, labels) are left aside, as a CSV's or Parquet's other columns are."""
    known = set(pipeline.names)
    records = [
        {k: v for k, v in r.items() if k in known} if isinstance(r, dict) and not known.issuperset(r) else r
        for r in records
    ]
    valid = np.ones(len(records), dtype=bool)
    errors: list[RowError] = []
    rows = []
    for start in range(0, len(records), part):
        chunk = list(records[start : start + part])
        try:
            rows.extend(pipeline.rows_from_records(chunk, start))
            continue
        except RecordError:
            pass
        for index, record in enumerate(chunk, start):
            if isinstance(record, _Unreadable):
                valid[index] = False
                errors.append(RowError(index, None, record.reason))
                continue
            try:
                rows.extend(pipeline.rows_from_records([record], index))
            except RecordError as exc:
                valid[index] = False
                errors.append(RowError(index, exc.field, exc.reason))
    return ColumnBatch(pipeline.inputs(rows), valid, errors)


@dataclass(frozen=True)
class _Unreadable:
    """A JSON Lines line that is not JSON: its row's error."""

    reason: str


def unreadable(reason: str) -> Any:
    return _Unreadable(reason)


def _errors(rejections: Rejections) -> list[RowError]:
    return [RowError(i, field, reason) for i, (field, reason) in sorted(rejections.reasons.items())]
