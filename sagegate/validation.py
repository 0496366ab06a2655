"""The rules for a feature value, defined once, with their messages (no numpy).

One `FeatureRule` per feature says what a value must be: its type, how a text cell (CSV) parses, its
range, its categories, and what fills it when it is missing. The gateway checks records with it
(`RecordValidator`: every bad field at once), the inference server's preprocessing with it record by
record (`sagegate.features`), and the vectorised paths (x-npy arrays, the batch engine's columns)
apply the same checks in the same order with the same messages (`Reason`), so that every path
accepts and refuses the same records for the same reason (tests/unit/test_rules_agree.py).

The order of the checks for a given value: its type; for numbers, finite, an integer where the type
is int (and within +-2**53, as a double), the declared minimum and maximum, and then the range of the
model's input (float32) once the feature's transforms are applied; for text, valid Unicode, then the
categories. The first rule a value breaks is its reason; across features, the manifest's order.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sagegate.manifest import Feature, FeatureType, Impute, Log1p, MinMax, ModelManifest, Standardize

__all__ = [
    "EXACT_INT",
    "FLOAT32_MAX",
    "MISSING",
    "FeatureRule",
    "FieldError",
    "InvalidValue",
    "Reason",
    "RecordError",
    "RecordValidator",
    "as_affine",
    "beyond_exact",
    "float32_inputs",
    "is_text",
    "safe_text",
    "show",
    "text_parser",
    "value_checker",
]

MISSING: Any = object()  # marks a feature that was not given
FLOAT32_MAX = 3.4028234663852886e38
EXACT_INT = 2.0**53  # the integers a double holds exactly; checked on the value as a double, in every path
TRUE_WORDS = frozenset({"true", "1"})  # in any case: True and TRUE as other tools write them
FALSE_WORDS = frozenset({"false", "0"})
# The numbers a text cell may hold: what Python's float() and Arrow's cast both read the same way.
NUMBER_PATTERN = r"^[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|(?i:inf|infinity|nan))$"
_NUMBER = re.compile(NUMBER_PATTERN)
_SURROGATE = re.compile("[\ud800-\udfff]")


class InvalidValue(ValueError):
    """A value that breaks its feature's declared type, range or categories."""


class RecordError(ValueError):
    """A record that fails validation; `record` is its index in the request, `field` the feature."""

    def __init__(self, record: int, field: str | None, reason: str) -> None:
        self.record = record
        self.field = field
        self.reason = reason
        where = f"record {record}" + (f", field {safe_text(field)!r}" if field else "")
        super().__init__(f"{where}: {reason}")


def beyond_exact(value: Any) -> bool:
    """Whether an integer that reads as +-2**53 as a double is in fact beyond it (2**53 + 1 rounds
    to 2**53): compared exactly, on the JSON integer or the text it came from."""
    import decimal

    try:
        exact = decimal.Decimal(value.strip()) if isinstance(value, str) else decimal.Decimal(value)
    except (decimal.InvalidOperation, TypeError, ValueError):
        return False
    return abs(exact) > decimal.Decimal(2**53)


def is_text(value: str) -> bool:
    """True unless `value` holds a lone surrogate (which no UTF-8 document can carry)."""
    return value.isascii() or not _SURROGATE.search(value)


def show(number: float) -> str:
    """A number in a message: whole numbers without a fraction, others as Python writes them."""
    try:
        value = float(number)
    except OverflowError:
        return "an integer beyond any float"
    return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)


def safe_text(text: str) -> str:
    """`text` with lone surrogates written as escapes: it can always be encoded to answer with."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class Reason:
    """Every message a feature value can be refused with."""

    REQUIRED = "is required"
    UNKNOWN = "is not a feature of this model"
    NOT_FINITE = "must be a finite number (not NaN or infinite, nor beyond a float's range)"
    BEYOND_EXACT = "is beyond +-2**53, the integers a float holds exactly"
    BEYOND_FLOAT32 = "is beyond the range of the model's float32 input"
    NOT_TEXT = "is not valid Unicode text (a lone surrogate)"

    @staticmethod
    def expected(feature_type: FeatureType, got: str) -> str:
        wanted = {
            FeatureType.BOOL: "a boolean",
            FeatureType.INT: "an integer",
            FeatureType.FLOAT: "a number",
        }.get(feature_type, "a string")
        return f"expected {wanted}, got {got}"

    @staticmethod
    def not_integer(value: float) -> str:
        return f"expected an integer, got {show(value)}"

    @staticmethod
    def not_boolean(value: float) -> str:
        return f"expected a boolean (true, false, 0 or 1), got {show(value)}"

    @staticmethod
    def below(value: float, minimum: float) -> str:
        return f"{show(value)} is below the minimum {show(minimum)}"

    @staticmethod
    def above(value: float, maximum: float) -> str:
        return f"{show(value)} is above the maximum {show(maximum)}"

    @staticmethod
    def not_a_category(value: str, categories: Sequence[str]) -> str:
        shown = ", ".join(sorted(categories)[:10])
        return f"{safe_text(value)!r} is not one of the categories ({shown})"

    @staticmethod
    def text_not(feature_type: FeatureType, text: str) -> str:
        wanted = "a boolean" if feature_type is FeatureType.BOOL else "a number"
        return f"expected {wanted}, got {safe_text(text)!r}"


def type_name(value: Any) -> str:
    """A JSON value's type as the messages name it (the batch engine maps Arrow types to these)."""
    return type(value).__name__


def as_affine(feature: Feature) -> tuple[float, float] | None:
    """(scale, shift) when every transform of a numeric feature is affine (standardize, min_max, or
    none), else None; the server applies it as `value * scale + shift`, and so do the checks here."""
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


def transformed(feature: Feature, value: float) -> float:
    """The value the model gets for `value` (numeric features), as the server computes it."""
    affine = as_affine(feature)
    if affine is not None:
        return value * affine[0] + affine[1]
    for step in feature.transforms:
        if isinstance(step, Standardize):
            value = (value - step.mean) / step.std
        elif isinstance(step, MinMax):
            value = (value - step.min) / (step.max - step.min)
        elif isinstance(step, Log1p):
            value = math.log1p(value) if value > -1 else math.nan
    return value


class FeatureRule:
    """What a value of one feature must be; `check` takes a JSON value, `parse` a text cell."""

    def __init__(self, feature: Feature, *, float32_input: bool = True) -> None:
        self.feature = feature
        self.name = feature.name
        self.type = feature.type
        self.float32_input = float32_input
        self.categories = frozenset(feature.categories or ()) if feature.type is FeatureType.CATEGORICAL else None
        impute = next((t.value for t in feature.transforms if isinstance(t, Impute)), None)
        self.fill: Any = feature.default if feature.default is not None else MISSING
        self.imputed = impute is not None and feature.default is None

    # -- one value ----------------------------------------------------------------------------------

    def check(self, value: Any) -> Any:
        """A given (not missing) JSON value, checked: numbers and booleans come back as float,
        text as str. Raises InvalidValue with the reason."""
        kind = self.type
        if kind is FeatureType.BOOL:
            if isinstance(value, bool):
                return 1.0 if value else 0.0
            if isinstance(value, int | float):  # 0 and 1 too: what numeric arrays and CSV carry
                if value in (0, 1):
                    return float(value)
                raise InvalidValue(Reason.not_boolean(value))
            raise InvalidValue(Reason.expected(kind, type_name(value)))
        if kind.is_numeric:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidValue(Reason.expected(kind, type_name(value)))
            return self.check_number(value)
        if not isinstance(value, str):
            raise InvalidValue(Reason.expected(kind, type_name(value)))
        return self.check_text(value)

    def check_number(self, value: float | str) -> float:
        """The numeric rules after the type: finite, integer, declared range, the model's range.
        `value` is a JSON number or the text of one (already matched by the number grammar)."""
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            raise InvalidValue(Reason.NOT_FINITE) from None
        if not math.isfinite(number):  # (1e400 reads as inf in every parser: the same reason)
            raise InvalidValue(Reason.NOT_FINITE)
        if self.type is FeatureType.INT:
            if not number.is_integer():
                raise InvalidValue(Reason.not_integer(number))
            if abs(number) > EXACT_INT or (abs(number) == EXACT_INT and beyond_exact(value)):
                raise InvalidValue(Reason.BEYOND_EXACT)
        feature = self.feature
        if feature.minimum is not None and number < feature.minimum:
            raise InvalidValue(Reason.below(number, feature.minimum))
        if feature.maximum is not None and number > feature.maximum:
            raise InvalidValue(Reason.above(number, feature.maximum))
        if self.float32_input and not abs(transformed(feature, number)) <= FLOAT32_MAX:
            raise InvalidValue(Reason.BEYOND_FLOAT32)
        return number

    def check_text(self, value: str) -> str:
        if not is_text(value):
            raise InvalidValue(Reason.NOT_TEXT)
        if self.categories is not None and value not in self.categories:
            raise InvalidValue(Reason.not_a_category(value, self.feature.categories or []))
        return value

    def parse(self, text: str) -> Any:
        """A text cell (not empty) as the JSON value it stands for, then checked."""
        kind = self.type
        if kind is FeatureType.BOOL:
            word = text.strip().lower()
            if word in TRUE_WORDS:
                return 1.0
            if word in FALSE_WORDS:
                return 0.0
            raise InvalidValue(Reason.text_not(kind, text))
        if kind.is_numeric:
            if not _NUMBER.match(text):
                raise InvalidValue(Reason.text_not(kind, text))
            return self.check_number(text)
        return self.check_text(text)


def float32_inputs(manifest: ModelManifest) -> set[str]:
    """The features the model takes as float32 (all of a matrix model's: its input is one float32 matrix)."""
    if manifest.inputs == "columns" and manifest.input_types is not None:
        return {name for name, kind in manifest.input_types.items() if kind == "float32"}
    return {f.name for f in manifest.features}


def value_checker(feature: Feature) -> Callable[[Any], Any]:
    return FeatureRule(feature).check


def text_parser(feature: Feature) -> Callable[[str], Any]:
    return FeatureRule(feature).parse


@dataclass(frozen=True)
class FieldError:
    field: str
    reason: str


class RecordValidator:
    """Checks one record and reports every bad field at once (the gateway's 422).

    `check` returns the record as the model will see it: given values as they were sent,
    defaults filled in, and features left to the server's impute step omitted.
    """

    def __init__(self, features: Sequence[Feature], *, float32: set[str] | None = None) -> None:
        self._rules = [FeatureRule(f, float32_input=float32 is None or f.name in float32) for f in features]
        self.names = frozenset(f.name for f in features)

    @classmethod
    def for_manifest(cls, manifest: ModelManifest) -> RecordValidator:
        return cls(manifest.features, float32=float32_inputs(manifest))

    def check(self, record: Mapping[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
        errors = [FieldError(safe_text(k), Reason.UNKNOWN) for k in record if k not in self.names]
        clean: dict[str, Any] = {}
        for rule in self._rules:
            value = record.get(rule.name)
            if value is None:
                if rule.fill is not MISSING:
                    clean[rule.name] = rule.fill
                elif not rule.imputed:
                    errors.append(FieldError(rule.name, Reason.REQUIRED))
                continue
            try:
                rule.check(value)
            except InvalidValue as exc:
                errors.append(FieldError(rule.name, str(exc)))
            else:
                clean[rule.name] = value
        return clean, errors
