"""Preprocessing compiled from a manifest's features into vectorised numpy transforms.

Two phases, so that dynamic batching can merge requests cheaply:

* `FeaturePipeline.rows_from_records` / `rows_from_text` validate each record (types, ranges,
  categories, missing values) and normalise it into a compact row: numbers as floats, categories
  as strings. This runs per request, so an error names the request's own record index.
* `FeaturePipeline.transform` turns the rows of a whole batch, from many requests, into the
  model's float32 input matrix, column by column with numpy.

The server, the batch engine and the package builder's parity check all use this one module, so
training-time and serving-time preprocessing cannot drift apart.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sagegate.manifest import (
    Feature,
    FeatureType,
    Impute,
    Log1p,
    MinMax,
    OneHot,
    Ordinal,
    Standardize,
)
from sagegate.validation import MISSING, InvalidValue, RecordError, text_parser, value_checker

__all__ = ["FeaturePipeline", "RecordError", "Row"]

# A validated record: numeric feature values (NaN = missing, to impute) then categorical ones.
Row = tuple[tuple[float, ...], tuple[str | None, ...]]


@dataclass(frozen=True)
class _Slot:
    """One feature's place in a row and how a missing value is handled."""

    name: str
    check: Callable[[Any], Any]
    parse: Callable[[str], Any]
    fill: Any  # value used when the feature is missing; MISSING means "required"


def _fill_value(feature: Feature, numeric: bool) -> Any:
    if feature.default is not None:
        return float(feature.default) if numeric else feature.default
    if any(isinstance(t, Impute) for t in feature.transforms):
        return math.nan if numeric else None  # imputed in transform()
    return MISSING


class FeaturePipeline:
    """Validates records and turns batches of them into the model's input matrix."""

    def __init__(self, features: Sequence[Feature]) -> None:
        self.features = list(features)
        self.names = [f.name for f in self.features]
        self._known = frozenset(self.names)
        # Numbers first, then booleans: the order of a row's numeric part (see _FastPath).
        self._numeric = [f for f in self.features if f.type.is_numeric and f.type is not FeatureType.BOOL] + [
            f for f in self.features if f.type is FeatureType.BOOL
        ]
        self._categorical = [f for f in self.features if not f.type.is_numeric]
        self._slots: list[_Slot] = []
        for f in self._numeric:
            self._slots.append(_Slot(f.name, value_checker(f), text_parser(f), _fill_value(f, True)))
        for f in self._categorical:
            self._slots.append(_Slot(f.name, value_checker(f), text_parser(f), _fill_value(f, False)))
        self._n_numeric = len(self._numeric)
        self.width = sum(f.width for f in self.features)
        offsets, at = {}, 0
        for f in self.features:
            offsets[f.name] = at
            at += f.width
        self._offsets = offsets
        self._fast = _FastPath(self._numeric, self._categorical)
        # Features whose steps are all affine (standardize, min_max, none) become one vectorised
        # multiply-add over their columns; the rest (impute, log1p) go step by step.
        affine = [(j, f, _as_affine(f)) for j, f in enumerate(self._numeric)]
        self._stepwise = [(j, f) for j, f, a in affine if a is None]
        linear = [(j, self._offsets[f.name], a) for j, f, a in affine if a is not None]
        self._affine = (
            None
            if not linear
            else (
                np.array([j for j, _, _ in linear]),
                np.array([o for _, o, _ in linear]),
                np.array([a[0] for _, _, a in linear]),
                np.array([a[1] for _, _, a in linear]),
            )
        )

    # -- validation -------------------------------------------------------------------------

    def _validate(self, index: int, get: Callable[[_Slot], Any]) -> Row:
        values: list[Any] = []
        for slot in self._slots:
            raw = get(slot)
            if raw is None or raw is MISSING:
                if slot.fill is MISSING:
                    raise RecordError(index, slot.name, "is required")
                values.append(slot.fill)
                continue
            try:
                values.append(slot.check(raw))
            except InvalidValue as exc:
                raise RecordError(index, slot.name, str(exc)) from None
        n = self._n_numeric
        return tuple(values[:n]), tuple(values[n:])

    def rows_from_records(self, records: Iterable[Any], start: int = 0) -> list[Row]:
        """Validates JSON-like records (mappings of feature name to value)."""
        records = records if isinstance(records, list) else list(records)
        rows = self._fast.rows(records)
        if rows is not None:
            return rows
        # Something is missing, optional or wrong: check record by record, to name it.
        return self._rows_one_by_one(records, start)

    def _rows_one_by_one(self, records: list[Any], start: int) -> list[Row]:
        rows: list[Row] = []
        known = self._known
        for index, record in enumerate(records, start):
            if not isinstance(record, Mapping):
                raise RecordError(index, None, f"expected an object of features, got {type(record).__name__}")
            unknown = [k for k in record if k not in known]
            if unknown:
                raise RecordError(index, unknown[0], "is not a feature of this model")
            rows.append(self._validate(index, lambda slot, r=record: r.get(slot.name)))  # type: ignore[misc]
        return rows

    def rows_from_text(self, header: Sequence[str] | None, cells: Iterable[Sequence[str]], start: int = 0) -> list[Row]:
        """Validates CSV rows; without a header the columns are the features in manifest order."""
        columns = list(header) if header is not None else self.names
        unknown = [c for c in columns if c not in self._known]
        if unknown:
            raise RecordError(start, unknown[0], "is not a feature of this model")
        position = {name: i for i, name in enumerate(columns)}
        width = len(columns)
        rows: list[Row] = []
        for index, row in enumerate(cells, start):
            if len(row) != width:
                raise RecordError(index, None, f"expected {width} columns, got {len(row)}")

            def cell(slot: _Slot, row: Sequence[str] = row, index: int = index) -> Any:
                at = position.get(slot.name)
                if at is None or row[at] == "":
                    return MISSING
                try:
                    return slot.parse(row[at])
                except InvalidValue as exc:
                    raise RecordError(index, slot.name, str(exc)) from None

            rows.append(self._validate(index, cell))
        return rows

    # -- transformation ---------------------------------------------------------------------

    @property
    def numeric_features(self) -> list[Feature]:
        """The numeric features in the order of a row's numeric part (numbers first, then booleans)."""
        return list(self._numeric)

    @property
    def categorical_features(self) -> list[Feature]:
        return list(self._categorical)

    def transform(self, rows: Sequence[Row]) -> np.ndarray:
        """The float32 input matrix [len(rows), width] for a batch of validated rows."""
        if not rows:
            return np.zeros((0, self.width), dtype=np.float32)
        block = np.array([r[0] for r in rows], dtype=np.float64) if self._numeric else None
        return self.transform_block(block, [[r[1][j] for r in rows] for j in range(len(self._categorical))], len(rows))

    def transform_block(
        self, numeric: np.ndarray | None, categorical: Sequence[Sequence[str | None] | np.ndarray], n: int
    ) -> np.ndarray:
        """The input matrix from validated columns: `numeric` [n, len(numeric_features)] (NaN = to
        impute), per categorical feature its values or its category codes. Rows and columns share
        this one code path."""
        out = np.zeros((n, self.width), dtype=np.float32)
        if n == 0:
            return out
        if numeric is not None and self._numeric:
            if self._affine is not None:
                source, target, scale, shift = self._affine
                out[:, target] = numeric[:, source] * scale + shift
            for j, feature in self._stepwise:
                out[:, self._offsets[feature.name]] = _numeric_steps(feature, numeric[:, j])
        for feature, values in zip(self._categorical, categorical, strict=True):
            _encode(feature, values, out, self._offsets[feature.name])
        return out

    def rows_from_array(self, array: np.ndarray, start: int = 0) -> list[Row]:
        """Validates a numeric matrix [records, features] whose columns are the features in manifest
        order (the application/x-npy body); only for models whose features are all numeric."""
        if self._categorical:
            raise ValueError(
                "a NumPy array can only carry numeric features; this model has "
                f"{', '.join(f.name for f in self._categorical)}"
            )
        x = array.reshape(1, -1) if array.ndim == 1 else array
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise RecordError(
                start, None, f"expected an array of shape (records, {len(self.features)}), got {array.shape}"
            )
        if x.dtype.kind not in "fiub":
            raise RecordError(start, None, f"expected a numeric array, got dtype {x.dtype}")
        order = [self.names.index(f.name) for f in self._numeric]  # rows keep numbers before booleans
        block = x[:, order].astype(np.float64, copy=False)
        for j, feature in enumerate(self._numeric):
            column = block[:, j]
            bad = ~np.isfinite(column)
            reason = "must be a finite number"
            if not bad.any() and feature.type is FeatureType.BOOL:
                bad, reason = (column != 0) & (column != 1), "expected a boolean (0 or 1)"
            if not bad.any() and feature.type is FeatureType.INT:
                bad, reason = column != np.floor(column), "expected an integer"
            if not bad.any() and feature.minimum is not None:
                bad, reason = column < feature.minimum, f"is below the minimum {feature.minimum:g}"
            if not bad.any() and feature.maximum is not None:
                bad, reason = column > feature.maximum, f"is above the maximum {feature.maximum:g}"
            if bad.any():
                first = int(np.flatnonzero(bad)[0])
                raise RecordError(
                    start + first, feature.name, f"{column[first]:g} {reason}" if reason.startswith("is") else reason
                )
        return [(tuple(row), ()) for row in block.tolist()]

    def transform_records(self, records: Iterable[Mapping[str, Any]]) -> np.ndarray:
        return self.transform(self.rows_from_records(records))


_NUMBER_TYPES = frozenset({int, float})
_BOOL_TYPES = frozenset({bool})


class _FastPath:
    """Validates complete, well-typed records at C speed: one itemgetter per record and a few
    set and numpy operations per request. Anything it cannot vouch for (a missing, optional,
    extra or wrongly typed feature, a value out of range) returns None, and the record-by-record
    path finds and names the problem."""

    def __init__(self, numeric: list[Feature], categorical: list[Feature]) -> None:
        numbers = [f for f in numeric if f.type is not FeatureType.BOOL]
        bools = [f for f in numeric if f.type is FeatureType.BOOL]
        self._width = len(numeric) + len(categorical)
        self._numbers = _getter([f.name for f in numbers])
        self._bools = _getter([f.name for f in bools])
        self._categories = _getter([f.name for f in categorical])
        self._allowed = [
            frozenset(f.categories or ()) if f.type is FeatureType.CATEGORICAL else None for f in categorical
        ]
        self._low = np.array([-np.inf if f.minimum is None else f.minimum for f in numbers])
        self._high = np.array([np.inf if f.maximum is None else f.maximum for f in numbers])
        self._integer = np.array([f.type is FeatureType.INT for f in numbers], dtype=bool)
        self._n_numbers = len(numbers)

    def rows(self, records: list[Any]) -> list[Row] | None:
        width, numbers, bools, categories = self._width, self._numbers, self._bools, self._categories
        allowed = self._allowed
        number_rows: list[tuple[Any, ...]] = []
        rows: list[Row] = []
        try:
            for record in records:
                if type(record) is not dict or len(record) != width:
                    return None
                a, b, c = numbers(record), bools(record), categories(record)
                if not _NUMBER_TYPES.issuperset(map(type, a)) or (b and not _BOOL_TYPES.issuperset(map(type, b))):
                    return None
                for value, known in zip(c, allowed, strict=True):
                    if type(value) is not str or (known is not None and value not in known):
                        return None
                number_rows.append(a)
                rows.append((a + b, c))
        except KeyError:
            return None
        if self._n_numbers and not self._in_range(number_rows):
            return None
        return rows

    def _in_range(self, number_rows: list[tuple[Any, ...]]) -> bool:
        block = np.array(number_rows, dtype=np.float64)
        if not np.isfinite(block).all() or (block < self._low).any() or (block > self._high).any():
            return False
        integers = block[:, self._integer]
        return bool((integers == np.floor(integers)).all())


def _getter(names: list[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    if not names:
        return lambda record: ()
    if len(names) == 1:
        name = names[0]
        return lambda record: (record[name],)
    return operator.itemgetter(*names)


def _as_affine(feature: Feature) -> tuple[float, float] | None:
    """(scale, shift) when every step of the feature is affine, else None."""
    scale, shift = 1.0, 0.0
    for step in feature.transforms:
        if isinstance(step, Standardize):
            a, b = 1.0 / step.std, -step.mean / step.std
        elif isinstance(step, MinMax):
            a, b = 1.0 / (step.max - step.min), -step.min / (step.max - step.min)
        else:
            return None
        scale, shift = a * scale, a * shift + b
    return scale, shift


def _numeric_steps(feature: Feature, column: np.ndarray) -> np.ndarray:
    for step in feature.transforms:
        if isinstance(step, Impute):
            column = np.where(np.isnan(column), float(step.value), column)
        elif isinstance(step, Standardize):
            column = (column - step.mean) / step.std
        elif isinstance(step, MinMax):
            column = (column - step.min) / (step.max - step.min)
        elif isinstance(step, Log1p):
            column = np.log1p(column)
    return column


def _encode(feature: Feature, values: Sequence[str | None] | np.ndarray, out: np.ndarray, offset: int) -> None:
    """Writes one categorical feature's columns; `values` are strings, or already its category codes
    (an integer array, -1 for a value outside the categories: the batch engine encodes with Arrow)."""
    if isinstance(values, np.ndarray):
        index = values
    else:
        impute = next((t.value for t in feature.transforms if isinstance(t, Impute)), None)
        if impute is not None:
            values = [str(impute) if v is None else v for v in values]
        lookup = {c: i for i, c in enumerate(feature.encoded_categories)}
        index = np.fromiter(
            (lookup.get(v, -1) if v is not None else -1 for v in values), dtype=np.int64, count=len(values)
        )
    encoding = feature.encoding
    if isinstance(encoding, OneHot):
        known = index >= 0
        out[np.flatnonzero(known), offset + index[known]] = 1.0
    elif isinstance(encoding, Ordinal):
        out[:, offset] = np.where(index >= 0, index, encoding.unknown_value)
