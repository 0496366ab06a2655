"""Validation of whole Arrow columns against a manifest: the batch engine's path to the model.

The rules are the server's (`sagegate.validation`) applied per column with numpy and Arrow compute
instead of per value; a row that breaks one is set aside with the first reason found, and the
valid rows go through the same `FeaturePipeline.transform_block` as real-time requests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sagegate.features import FeaturePipeline
from sagegate.manifest import Feature, FeatureType, Impute
from sagegate.validation import InvalidValue, text_parser

__all__ = ["ColumnBatch", "RowError", "validate_columns"]


@dataclass(frozen=True)
class RowError:
    row: int
    field: str | None
    reason: str


@dataclass
class ColumnBatch:
    matrix: np.ndarray  # the model's input for the valid rows
    valid: np.ndarray  # bool per input row
    errors: list[RowError]


class _Rejections:
    def __init__(self, n: int) -> None:
        self.valid = np.ones(n, dtype=bool)
        self.errors: dict[int, RowError] = {}

    def reject(self, mask: np.ndarray, field: str | None, reason: str | Callable[[int], str]) -> None:
        """Sets aside the still-valid rows in `mask`; `reason` may be worded per row (only those)."""
        for i in np.flatnonzero(mask & self.valid):
            text = reason if isinstance(reason, str) else reason(int(i))
            self.errors[int(i)] = RowError(int(i), field, text)
        self.valid &= ~mask


def _has_fill(feature: Feature) -> bool:
    return feature.default is not None or any(isinstance(t, Impute) for t in feature.transforms)


def _numbers(feature: Feature, column: pa.ChunkedArray | None, n: int, rejections: _Rejections) -> np.ndarray:
    if column is None:
        values, missing = np.full(n, np.nan), np.ones(n, dtype=bool)
    else:
        kind = column.type
        missing = np.array(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)  # writable
        if pa.types.is_boolean(kind):
            if feature.type is not FeatureType.BOOL:
                rejections.reject(~missing, feature.name, "expected a number, got bool")
            values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
            if feature.type is FeatureType.BOOL:
                rejections.reject(~missing, feature.name, "expected a boolean")
            values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        else:
            values = np.asarray(_parse_text(feature, column.cast(pa.string()).to_pylist(), missing, rejections))
        values = np.asarray(values, dtype=np.float64)
    if feature.default is not None:
        values = np.where(missing, float(feature.default), values)
    elif not _has_fill(feature):
        rejections.reject(missing, feature.name, "is required")
    present = ~missing | (feature.default is not None)
    bad = present & ~np.isfinite(values)
    rejections.reject(bad, feature.name, "must be a finite number")
    if feature.type is FeatureType.INT:
        rejections.reject(present & (values != np.floor(values)), feature.name, "expected an integer")
    lo, hi = feature.minimum, feature.maximum
    if lo is not None:
        rejections.reject(present & (values < lo), feature.name, lambda i: f"{values[i]:g} is below the minimum {lo:g}")
    if hi is not None:
        rejections.reject(present & (values > hi), feature.name, lambda i: f"{values[i]:g} is above the maximum {hi:g}")
    return values


def _parse_text(feature: Feature, texts: list[str | None], missing: np.ndarray, rejections: _Rejections) -> list[float]:
    """Text cells as numbers, parsed by the server's own `text_parser` (same rules, same messages)."""
    parse = text_parser(feature)
    values: list[float] = []
    bad, reasons = np.zeros(len(texts), dtype=bool), [""] * len(texts)
    for i, text in enumerate(texts):
        if text is None or text == "":
            missing[i] = True
            values.append(np.nan)
            continue
        try:
            values.append(float(parse(text)))
        except InvalidValue as exc:
            bad[i], reasons[i] = True, str(exc)
            values.append(np.nan)
    rejections.reject(bad, feature.name, reasons.__getitem__)
    return values


def _categories(feature: Feature, column: pa.ChunkedArray | None, n: int, rejections: _Rejections) -> np.ndarray:
    """The feature's category codes (-1: outside the categories), computed by Arrow, not per value."""
    encoded = pa.array(feature.encoded_categories, type=pa.string())
    if column is None:
        strings = pa.nulls(n, type=pa.string())
    else:
        text = column.cast(pa.string())
        strings = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
    missing = np.array(pc.is_null(strings).to_numpy(zero_copy_only=False), dtype=bool)
    codes = np.asarray(
        pc.fill_null(pc.index_in(strings, value_set=encoded), -1).to_numpy(zero_copy_only=False), dtype=np.int64
    )
    fill = (
        feature.default
        if feature.default is not None
        else next((t.value for t in feature.transforms if isinstance(t, Impute)), None)
    )
    if fill is not None:
        position = feature.encoded_categories.index(str(fill)) if str(fill) in feature.encoded_categories else -1
        codes = np.where(missing, position, codes)
    else:
        rejections.reject(missing, feature.name, "is required")
    if feature.type is FeatureType.CATEGORICAL and feature.categories:
        allowed = pc.index_in(strings, value_set=pa.array(feature.categories, type=pa.string()))
        unknown = ~missing & np.array(pc.is_null(allowed).to_numpy(zero_copy_only=False), dtype=bool)
        shown = ", ".join(sorted(feature.categories)[:10])
        rejections.reject(
            unknown, feature.name, lambda i: f"{strings[i].as_py()!r} is not one of the categories ({shown})"
        )
    return codes


def validate_columns(pipeline: FeaturePipeline, table: pa.Table) -> ColumnBatch:
    """The model input for the rows of `table` that pass the manifest, and why the others did not."""
    n = table.num_rows
    rejections = _Rejections(n)
    names = set(table.column_names)
    column = {f.name: table.column(f.name) if f.name in names else None for f in pipeline.features}
    numeric = [_numbers(f, column[f.name], n, rejections) for f in pipeline.numeric_features]
    categorical = [_categories(f, column[f.name], n, rejections) for f in pipeline.categorical_features]
    valid = rejections.valid
    block = np.column_stack(numeric)[valid] if numeric else None
    kept = [codes[valid] for codes in categorical]
    matrix = pipeline.transform_block(block, kept, int(valid.sum()))
    return ColumnBatch(matrix, valid, sorted(rejections.errors.values(), key=lambda e: e.row))
