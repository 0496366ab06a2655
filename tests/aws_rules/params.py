"""A request checked as the service would check it, from botocore's model of the operation: types,
required members and minimums (botocore's own ParamValidator), and the maximum lengths, value
ranges, enums and patterns that the model declares and that botocore leaves to the service (moto
checks none of them; Step Functions hands the parameters to the service as they are)."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import botocore.session
from botocore.validate import ParamValidator

from tests.aws_rules.iam import Call

__all__ = ["problems", "validate"]


@cache
def _operation(service: str, operation: str) -> Any:
    return botocore.session.get_session().get_service_model(service).operation_model(operation)


@cache
def _pattern(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:  # a construct Python's re lacks (\p{...} classes): left to the service
        return None


def _walk(shape: Any, value: Any, path: str, found: list[str]) -> None:
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():
            if name in value:
                _walk(member, value[name], f"{path}.{name}", found)
        return
    if kind == "list" and isinstance(value, list):
        if "max" in shape.metadata and len(value) > shape.metadata["max"]:
            found.append(f"{path}: {len(value)} items, at most {shape.metadata['max']}")
        for i, item in enumerate(value):
            _walk(shape.member, item, f"{path}[{i}]", found)
        return
    if kind == "map" and isinstance(value, dict):
        if "max" in shape.metadata and len(value) > shape.metadata["max"]:
            found.append(f"{path}: {len(value)} entries, at most {shape.metadata['max']}")
        for key, item in value.items():
            _walk(shape.key, key, f"{path}<key>", found)
            _walk(shape.value, item, f"{path}.{key}", found)
        return
    if kind == "string" and isinstance(value, str):
        if "max" in shape.metadata and len(value) > shape.metadata["max"]:
            found.append(f"{path}: {len(value)} characters, at most {shape.metadata['max']}")
        if shape.enum and value not in shape.enum:
            found.append(f"{path}: {value!r} is not one of {shape.enum}")
        pattern = shape.metadata.get("pattern")
        compiled = _pattern(pattern) if pattern else None
        if compiled is not None and not compiled.search(value):
            found.append(f"{path}: {value!r} does not match {pattern}")
        return
    numeric = kind in ("integer", "long", "float", "double") and isinstance(value, int | float)
    if numeric and "max" in shape.metadata and value > shape.metadata["max"]:
        found.append(f"{path}: {value} is above {shape.metadata['max']}")


def validate(service: str, operation: str, params: dict[str, Any]) -> list[str]:
    model = _operation(service, operation)
    report = ParamValidator().validate(params, model.input_shape)
    found = (
        [line.strip() for line in report.generate_report().splitlines() if line.strip()] if report.has_errors() else []
    )
    _walk(model.input_shape, params, operation, found)
    return found


def problems(call: Call) -> list[str]:
    return validate(call.service, call.operation, call.params)
