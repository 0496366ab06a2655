"""Preprocessing compiled from a manifest's features into vectorised numpy transforms.

Two phases, so that dynamic batching can merge requests cheaply:

* `FeaturePipeline.rows_from_records` / `rows_from_text` / `rows_from_array` validate each record
  with the feature rules of `sagegate.validation` (one definition, the gateway's too) and normalise
  it into a compact row: numbers as floats, categories as strings. This runs per request, so an
  error names the request's own record index.
* `FeaturePipeline.transform` turns the rows of a whole batch, from many requests, into the
  model's float32 input matrix, column by column with numpy.

`Rejections` and `number_failures` apply the same rules to whole columns (an x-npy body, the batch
engine's chunks), in the same order and with the same messages as a record checked value by value.
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
    ModelManifest,
    OneHot,
    Ordinal,
    Standardize,
)
from sagegate.validation import (
    EXACT_INT,
    FLOAT32_MAX,
    MISSING,
    FeatureRule,
    InvalidValue,
    Reason,
    RecordError,
    as_affine,
    is_text,
    safe_text,
)

__all__ = ["ArrayShapeError", "FeaturePipeline", "RecordError", "Rejections", "Row", "number_failures"]

# A validated record: numeric feature values (NaN = missing, to impute) then categorical ones.
Row = tuple[tuple[float, ...], tuple[str | None, ...]]


@dataclass(frozen=True)
class _Slot:
    """One feature's rule, its place in a row, and what fills it when it is missing."""

    rule: FeatureRule
    position: int
    fill: Any  # MISSING means "required"


def _fill_value(rule: FeatureRule, numeric: bool) -> Any:
    if rule.fill is not MISSING:
        return float(rule.fill) if numeric else rule.fill
    if rule.imputed:
        return math.nan if numeric else None  # imputed in transform()
    return MISSING


class ArrayShapeError(ValueError):
    """A numeric array whose shape is not (records, features)."""


class Rejections:
    """Per row of a block, the first rule it breaks: rules are applied feature by feature in the
    manifest's order, each feature's checks in the order of `sagegate.validation`."""

    def __init__(self, n: int) -> None:
        self.valid = np.ones(n, dtype=bool)
        self.reasons: dict[int, tuple[str | None, str]] = {}

    def reject(self, mask: np.ndarray, field: str | None, reason: str | Callable[[int], str]) -> None:
        """Sets aside the still-valid rows in `mask`; `reason` may be worded per row (only those)."""
        for i in np.flatnonzero(mask & self.valid):
            self.reasons[int(i)] = (field, reason if isinstance(reason, str) else reason(int(i)))
        self.valid &= ~mask

    def first(self) -> tuple[int, str | None, str] | None:
        if not self.reasons:
            return None
        row = min(self.reasons)
        return row, *self.reasons[row]


def number_failures(rule: FeatureRule, values: np.ndarray) -> Iterable[tuple[np.ndarray, Callable[[int], str]]]:
    """The numeric checks of `FeatureRule.check_number`, for a column of float64 values (the
    present ones; a caller masks out missing rows): (rows that fail, their reason), in order."""
    feature = rule.feature
    finite = np.isfinite(values)
    yield ~finite, lambda i: Reason.NOT_FINITE
    if rule.type is FeatureType.INT:
        with np.errstate(invalid="ignore"):
            yield finite & (values != np.floor(values)), lambda i: Reason.not_integer(float(values[i]))
        yield np.abs(values) > EXACT_INT, lambda i: Reason.BEYOND_EXACT
    if feature.minimum is not None:
        lo = feature.minimum
        yield values < lo, lambda i: Reason.below(float(values[i]), lo)
    if feature.maximum is not None:
        hi = feature.maximum
        yield values > hi, lambda i: Reason.above(float(values[i]), hi)
    if rule.float32_input:
        with np.errstate(over="ignore", invalid="ignore"):
            model_value = _transformed(feature, values)
            yield finite & ~(np.abs(model_value) <= FLOAT32_MAX), lambda i: Reason.BEYOND_FLOAT32


def _not_boolean(values: np.ndarray) -> Callable[[int], str]:
    return lambda i: Reason.not_boolean(float(values[i]))


def _transformed(feature: Feature, values: np.ndarray) -> np.ndarray:
    affine = as_affine(feature)
    if affine is not None:
        return values * affine[0] + affine[1]
    return _numeric_steps(feature, values)


class FeaturePipeline:
    """Validates records and turns batches of them into the model's input matrix."""

    def __init__(
        self,
        features: Sequence[Feature],
        *,
        input_name: str = "input",
        input_types: Mapping[str, str] | None = None,
        onnx_names: Mapping[str, str] | None = None,
    ) -> None:
        """`input_types`: the model takes one ONNX input per feature, of these types (a model with its
        own preprocessing); without it, one float32 matrix named `input_name`."""
        self.features = list(features)
        self.names = [f.name for f in self.features]
        self._known = frozenset(self.names)
        self.input_name = input_name
        self.input_types = dict(input_types) if input_types is not None else None
        self.onnx_names = dict(onnx_names or {})
        float32 = (
            set(self.names) if self.input_types is None else {n for n, t in self.input_types.items() if t == "float32"}
        )
        self.rules = {f.name: FeatureRule(f, float32_input=f.name in float32) for f in self.features}
        # A row holds numbers first, then booleans, then categories (see _FastPath); records are
        # checked in the manifest's order, so the first bad feature of a record is the same everywhere.
        self._numeric = [f for f in self.features if f.type.is_numeric and f.type is not FeatureType.BOOL] + [
            f for f in self.features if f.type is FeatureType.BOOL
        ]
        self._categorical = [f for f in self.features if not f.type.is_numeric]
        layout = [f.name for f in self._numeric] + [f.name for f in self._categorical]
        self._slots = [
            _Slot(self.rules[f.name], layout.index(f.name), _fill_value(self.rules[f.name], f.type.is_numeric))
            for f in self.features
        ]
        self._n_numeric = len(self._numeric)
        self.width = sum(f.width for f in self.features)
        offsets, at = {}, 0
        for f in self.features:
            offsets[f.name] = at
            at += f.width
        self._offsets = offsets
        self._fast = _FastPath(self._numeric, self._categorical, self.rules)
        self._block_check = _BlockCheck(self.features, self.rules, [self.names.index(f.name) for f in self._numeric])
        # Features whose steps are all affine (standardize, min_max, none) become one vectorised
        # multiply-add over their columns; the rest (impute, log1p) go step by step.
        affine = [(j, f, as_affine(f)) for j, f in enumerate(self._numeric)]
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
        # Every feature a number taken as it is, in place: the input matrix is the block itself.
        self._identity = (
            not self._categorical
            and not self._stepwise
            and [o for _, o, _ in linear] == list(range(self.width))
            and all(a == (1.0, 0.0) for _, _, a in linear)
        )

    @classmethod
    def for_manifest(cls, manifest: ModelManifest) -> FeaturePipeline:
        columns = manifest.inputs == "columns"
        return cls(
            manifest.features,
            input_name=manifest.onnx_input,
            input_types=manifest.input_types if columns else None,
            onnx_names=manifest.input_names,
        )

    def feed(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The inputs under the ONNX graph's own names (a converter may have renamed a feature's)."""
        names = self.onnx_names
        return {names.get(name, name): values for name, values in inputs.items()} if names else dict(inputs)

    @property
    def columns(self) -> bool:
        """True when the model takes one input per feature (and does its own preprocessing)."""
        return self.input_types is not None

    # -- validation -------------------------------------------------------------------------

    def _validate(self, index: int, get: Callable[[FeatureRule], Any], *, text: bool = False) -> Row:
        values: list[Any] = [None] * len(self._slots)
        for slot in self._slots:
            raw = get(slot.rule)
            if raw is None or raw is MISSING:
                if slot.fill is MISSING:
                    raise RecordError(index, slot.rule.name, Reason.REQUIRED)
                values[slot.position] = slot.fill
                continue
            try:
                values[slot.position] = slot.rule.parse(raw) if text else slot.rule.check(raw)
            except InvalidValue as exc:
                raise RecordError(index, slot.rule.name, str(exc)) from None
        n = self._n_numeric
        return tuple(values[:n]), tuple(values[n:])

    def rows_from_records(self, records: Iterable[Any], start: int = 0) -> list[Row]:
        """Validates JSON-like records: mappings of feature name to value, or lists of the values in
        the manifest's order (what SageMaker's JSON serializer sends)."""
        records = records if isinstance(records, list) else list(records)
        rows = self._fast.rows(records)
        if rows is not None:
            return rows
        # Something is missing, optional, positional or wrong: check record by record, to name it.
        return self._rows_one_by_one(records, start)

    def record(self, index: int, record: Any) -> Mapping[str, Any]:
        """A record as a mapping of feature names: a list is the features' values in manifest order."""
        if isinstance(record, list):
            if len(record) != len(self.names):
                raise RecordError(index, None, f"expected a list of {len(self.names)} values, got {len(record)}")
            return dict(zip(self.names, record, strict=True))
        if not isinstance(record, Mapping):
            raise RecordError(index, None, f"expected an object of features, got {type(record).__name__}")
        return record

    def _rows_one_by_one(self, records: list[Any], start: int) -> list[Row]:
        rows: list[Row] = []
        known = self._known
        for index, record in enumerate(records, start):
            mapping = self.record(index, record)
            unknown = [k for k in mapping if k not in known]
            if unknown:
                raise RecordError(index, safe_text(str(unknown[0])), Reason.UNKNOWN)
            rows.append(self._validate(index, lambda rule, r=mapping: r.get(rule.name)))  # type: ignore[misc]
        return rows

    def rows_from_text(self, header: Sequence[str] | None, cells: Iterable[Sequence[str]], start: int = 0) -> list[Row]:
        """Validates CSV rows; without a header the columns are the features in manifest order. An
        empty cell is a missing value; the others are parsed by each feature's rule."""
        columns = list(header) if header is not None else self.names
        unknown = [c for c in columns if c not in self._known]
        if unknown:
            raise RecordError(start, safe_text(unknown[0]), Reason.UNKNOWN)
        position = {name: i for i, name in enumerate(columns)}
        width = len(columns)
        rows: list[Row] = []
        for index, row in enumerate(cells, start):
            if len(row) != width:
                raise RecordError(index, None, f"expected {width} columns, got {len(row)}")

            def cell(rule: FeatureRule, row: Sequence[str] = row) -> Any:
                at = position.get(rule.name)
                return MISSING if at is None or row[at] == "" else row[at]

            rows.append(self._validate(index, cell, text=True))
        return rows

    # -- transformation ---------------------------------------------------------------------

    @property
    def numeric_features(self) -> list[Feature]:
        """The numeric features in the order of a row's numeric part (numbers first, then booleans)."""
        return list(self._numeric)

    @property
    def categorical_features(self) -> list[Feature]:
        return list(self._categorical)

    def inputs(self, rows: Sequence[Row]) -> dict[str, np.ndarray]:
        """The model's inputs for a batch of validated rows: its matrix, or one column per feature."""
        if not self.columns:
            return {self.input_name: self.transform(rows)}
        block = np.array([r[0] for r in rows], dtype=np.float64).reshape(len(rows), -1) if self._numeric else None
        values = [[r[1][j] for r in rows] for j in range(len(self._categorical))]
        return self.block_inputs(block, values, len(rows))

    def block_inputs(
        self, numeric: np.ndarray | None, categorical: Sequence[Sequence[str | None] | np.ndarray], n: int
    ) -> dict[str, np.ndarray]:
        """`inputs` from validated columns (see `transform_block`; a columns model gets its categories
        as text, not codes)."""
        if not self.columns:
            return {self.input_name: self.transform_block(numeric, categorical, n)}
        assert self.input_types is not None
        found: dict[str, np.ndarray] = {}
        for j, feature in enumerate(self._numeric):
            column = numeric[:, j] if numeric is not None else np.zeros(n)
            found[feature.name] = column.astype(_NUMPY_TYPES[self.input_types[feature.name]]).reshape(n, 1)
        for feature, values in zip(self._categorical, categorical, strict=True):
            found[feature.name] = np.array(list(values), dtype=object).reshape(n, 1)
        return found

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
        if self._identity and numeric is not None and n:
            return numeric.astype(np.float32)
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
        order (the application/x-npy body); only for models whose features are all numeric. The
        checks are the records' own, applied column by column; the first bad record is named."""
        return [(tuple(row), ()) for row in self.block_from_array(array, start).tolist()]

    def block_from_array(self, array: np.ndarray, start: int = 0) -> np.ndarray:
        """`rows_from_array` without a Python object per record: the validated float64 block
        [records, numeric features] in a row's order (numbers, then booleans), which
        `transform_block` and `block_inputs` take as it is."""
        if self._categorical:
            raise ValueError(
                "a NumPy array can only carry numeric features; this model has "
                f"{', '.join(f.name for f in self._categorical)}"
            )
        x = array.reshape(1, -1) if array.ndim == 1 else array
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ArrayShapeError(  # the whole array's, not one record's
                f"expected an array of shape (records, {len(self.features)}), one column per feature, got {array.shape}"
            )
        if x.dtype.kind not in "fiub":
            raise RecordError(start, None, f"expected a numeric array, got dtype {x.dtype}")
        vouched = self._block_check.vouch(x)
        if vouched is not None:
            return vouched
        rejections = Rejections(len(x))
        for i, feature in enumerate(self.features):
            column = x[:, i]
            rule = self.rules[feature.name]
            if feature.type is FeatureType.BOOL:
                flags = column.astype(np.float64, copy=False)
                rejections.reject((flags != 0) & (flags != 1), feature.name, _not_boolean(flags))
                continue
            if column.dtype.kind == "b":
                rejections.reject(np.ones(len(x), dtype=bool), feature.name, Reason.expected(rule.type, "bool"))
                continue
            if rule.type is FeatureType.INT and column.dtype.kind in "iu":  # exactly: 2**53 + 1 is no double
                beyond = (column > 2**53) | (column < -(2**53)) if column.dtype.kind == "i" else column > 2**53
                rejections.reject(beyond, feature.name, Reason.BEYOND_EXACT)
            values = column.astype(np.float64, copy=False)
            for bad, reason in number_failures(rule, values):
                rejections.reject(bad, feature.name, reason)
        found = rejections.first()
        if found is not None:
            raise RecordError(start + found[0], found[1], found[2])
        order = [self.names.index(f.name) for f in self._numeric]  # rows keep numbers before booleans
        if order == list(range(len(order))):
            return x.astype(np.float64, copy=False)
        return x[:, order].astype(np.float64, copy=False)

    def transform_records(self, records: Iterable[Mapping[str, Any]]) -> np.ndarray:
        return self.transform(self.rows_from_records(records))


_NUMPY_TYPES = {"float32": np.float32, "float64": np.float64, "int64": np.int64, "string": object}
_NUMBER_TYPES = frozenset({int, float})
_BOOL_TYPES = frozenset({bool})


class _FastPath:
    """Validates complete, well-typed records at C speed: one itemgetter per record and a few
    set and numpy operations per request. Anything it cannot vouch for (a missing, optional,
    extra or wrongly typed feature, a value out of range) returns None, and the record-by-record
    path finds and names the problem."""

    def __init__(self, numeric: list[Feature], categorical: list[Feature], rules: Mapping[str, FeatureRule]) -> None:
        numbers = [f for f in numeric if f.type is not FeatureType.BOOL]
        # the numbers' rules as one block check (a floor and a ceiling per feature, and the rest)
        self._check = _BlockCheck(numbers, rules, list(range(len(numbers))))
        bools = [f for f in numeric if f.type is FeatureType.BOOL]
        self._width = len(numeric) + len(categorical)
        self._numbers = _getter([f.name for f in numbers])
        self._bools = _getter([f.name for f in bools])
        self._categories = _getter([f.name for f in categorical])
        self._allowed = [
            frozenset(f.categories or ()) if f.type is FeatureType.CATEGORICAL else None for f in categorical
        ]
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
                    if not is_text(value):
                        return None
                number_rows.append(a)
                rows.append((a + b, c))
        except KeyError:
            return None
        if self._n_numbers and number_rows and not self._in_range(number_rows):
            return None
        return rows

    def _in_range(self, number_rows: list[tuple[Any, ...]]) -> bool:
        """The numeric rules, or near enough to leave the exact verdict to the checked path: huge
        integers (beyond 2**53, where floats stop being exact) and values whose transform nears the
        float32 limit are not vouched for."""
        try:
            block = np.array(number_rows, dtype=np.float64)
        except OverflowError:  # an integer beyond any float
            return False
        return self._check.vouch(block) is not None


class _BlockCheck:
    """Vouches for a whole numeric block at once, a few numpy operations over every column together:
    finite, within the declared ranges, integers where the feature is an int (and below 2**53) or a
    boolean (0 or 1), well within float32 once transformed. A block it cannot vouch for returns None,
    and the column-by-column checks find and name the first bad record (the verdict is theirs)."""

    def __init__(self, features: list[Feature], rules: Mapping[str, FeatureRule], order: list[int]) -> None:
        def bound(value: float | None, default: float) -> float:
            return default if value is None else float(value)

        is_bool = [f.type is FeatureType.BOOL for f in features]
        low = np.array([0.0 if b else bound(f.minimum, -np.inf) for f, b in zip(features, is_bool, strict=True)])
        high = np.array([1.0 if b else bound(f.maximum, np.inf) for f, b in zip(features, is_bool, strict=True)])
        self._integer = np.flatnonzero([f.type is FeatureType.INT or b for f, b in zip(features, is_bool, strict=True)])
        affine = [
            None if b or not rules[f.name].float32_input else as_affine(f)
            for f, b in zip(features, is_bool, strict=True)
        ]
        # Every bound on a column's values as one least and one greatest value: the declared range,
        # finite, and what keeps an affine transform's result within float32 (|x * scale + shift| <=
        # FLOAT32_MAX / 2, solved for x and narrowed by a part in 10**9, so that rounding cannot let a
        # value through: one at the very edge goes to the column-by-column checks, whose verdict it is).
        finite = float(np.finfo(np.float64).max)
        self._floor = np.maximum(low, -finite)
        self._ceiling = np.minimum(high, finite)
        for j, a in enumerate(affine):
            if a is None:
                continue
            scale, shift = a
            if scale == 0:
                if abs(shift) > FLOAT32_MAX / 2:
                    self._floor[j], self._ceiling[j] = np.inf, -np.inf  # nothing is vouched for
                continue
            ends = sorted(((-FLOAT32_MAX / 2 - shift) / scale, (FLOAT32_MAX / 2 - shift) / scale))
            self._floor[j] = max(self._floor[j], ends[0] + abs(ends[0]) * 1e-9)
            self._ceiling[j] = min(self._ceiling[j], ends[1] - abs(ends[1]) * 1e-9)
        # Features whose transform is not affine (log1p, impute): checked column by column.
        self._stepwise = [
            (j, f)
            for j, (f, b, a) in enumerate(zip(features, is_bool, affine, strict=True))
            if a is None and not b and rules[f.name].float32_input
        ]
        self._order = None if order == list(range(len(order))) else order

    def vouch(self, x: np.ndarray) -> np.ndarray | None:
        if x.dtype.kind == "b" or len(x) == 0:
            return None
        # Per column its least and greatest value (NaN if it holds one, which no bound admits): the
        # bounds need only these. On the given dtype: widening to float64 keeps the order.
        with np.errstate(invalid="ignore"):
            if not ((x.min(axis=0) >= self._floor).all() and (x.max(axis=0) <= self._ceiling).all()):
                return None
        values = x.astype(np.float64, copy=False)
        with np.errstate(over="ignore", invalid="ignore"):
            if len(self._integer):
                integers = values[:, self._integer]
                if not (integers == np.floor(integers)).all() or (np.abs(integers) >= EXACT_INT).any():
                    return None
            for j, feature in self._stepwise:
                if not (np.abs(_transformed(feature, values[:, j])) <= FLOAT32_MAX / 2).all():
                    return None
        return values if self._order is None else values[:, self._order]


def _getter(names: list[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    if not names:
        return lambda record: ()
    if len(names) == 1:
        name = names[0]
        return lambda record: (record[name],)
    return operator.itemgetter(*names)


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
