"""Checking feature values against a manifest, in plain Python (no numpy).

The rules live here once: the inference server's preprocessing (`sagegate.features`) and the
gateway (which must not import numpy) both check values with `value_checker`, so a request the
gateway accepts is one the server accepts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sagegate.manifest import Feature, FeatureType, Impute

__all__ = [
    "MISSING",
    "FieldError",
    "InvalidValue",
    "RecordError",
    "RecordValidator",
    "text_parser",
    "value_checker",
]

MISSING: Any = object()  # marks a feature that was not given
_TRUE = frozenset({"true", "1", "t", "yes"})
_FALSE = frozenset({"false", "0", "f", "no"})


class InvalidValue(ValueError):
    """A value that breaks its feature's declared type, range or categories."""


class RecordError(ValueError):
    """A record that fails validation; `record` is its index in the request, `field` the feature."""

    def __init__(self, record: int, field: str | None, reason: str) -> None:
        self.record = record
        self.field = field
        self.reason = reason
        where = f"record {record}" + (f", field {field!r}" if field else "")
        super().__init__(f"{where}: {reason}")


def _numeric_checker(feature: Feature) -> Callable[[Any], float]:
    lo, hi = feature.minimum, feature.maximum
    kind = feature.type

    def check(value: Any) -> float:
        if kind is FeatureType.BOOL:
            if not isinstance(value, bool):
                raise InvalidValue(f"expected a boolean, got {type(value).__name__}")
            return 1.0 if value else 0.0
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidValue(
                f"expected {'an integer' if kind is FeatureType.INT else 'a number'}, got {type(value).__name__}"
            )
        number = float(value)
        if not math.isfinite(number):
            raise InvalidValue("must be a finite number")
        if kind is FeatureType.INT and not number.is_integer():
            raise InvalidValue("expected an integer")
        if lo is not None and number < lo:
            raise InvalidValue(f"{value} is below the minimum {lo:g}")
        if hi is not None and number > hi:
            raise InvalidValue(f"{value} is above the maximum {hi:g}")
        return number

    return check


def _category_checker(feature: Feature) -> Callable[[Any], str]:
    allowed = frozenset(feature.categories or ()) if feature.type is FeatureType.CATEGORICAL else None
    shown = ", ".join(sorted(allowed)[:10]) if allowed else ""

    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise InvalidValue(f"expected a string, got {type(value).__name__}")
        if allowed is not None and value not in allowed:
            raise InvalidValue(f"{value!r} is not one of the categories ({shown})")
        return value

    return check


def value_checker(feature: Feature) -> Callable[[Any], Any]:
    """Checks one given value: numbers (and booleans) come back as float, categories as str."""
    return _numeric_checker(feature) if feature.type.is_numeric else _category_checker(feature)


def text_parser(feature: Feature) -> Callable[[str], Any]:
    """Parses a CSV cell into the JSON-like value the checker expects."""
    if feature.type is FeatureType.BOOL:

        def parse_bool(text: str) -> Any:
            low = text.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise InvalidValue(f"expected a boolean, got {text!r}")

        return parse_bool
    if feature.type.is_numeric:

        def parse_number(text: str) -> Any:
            try:
                return float(text)
            except ValueError:
                raise InvalidValue(f"expected a number, got {text!r}") from None

        return parse_number
    return lambda text: text


@dataclass(frozen=True)
class FieldError:
    field: str
    reason: str


class RecordValidator:
    """Checks one record and reports every bad field at once (the gateway's 422).

    `check` returns the record as the model will see it: given values as they were sent,
    defaults filled in, and features left to the server's impute step omitted.
    """

    def __init__(self, features: Sequence[Feature]) -> None:
        self._features = [(f, value_checker(f)) for f in features]
        self.names = frozenset(f.name for f in features)

    def check(self, record: Mapping[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
        errors = [FieldError(k, "is not a feature of this model") for k in record if k not in self.names]
        clean: dict[str, Any] = {}
        for feature, check in self._features:
            value = record.get(feature.name)
            if value is None:
                if feature.default is not None:
                    clean[feature.name] = feature.default
                elif not any(isinstance(t, Impute) for t in feature.transforms):
                    errors.append(FieldError(feature.name, "is required"))
                continue
            try:
                check(value)
            except InvalidValue as exc:
                errors.append(FieldError(feature.name, str(exc)))
            else:
                clean[feature.name] = value
        return clean, errors
