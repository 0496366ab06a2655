"""The state machine definitions in stepfunctions/, with their ${...} placeholders substituted."""

from __future__ import annotations

import json
import re
from pathlib import Path

__all__ = ["DEFINITIONS", "load_definition", "placeholders"]

DEFINITIONS = Path(__file__).resolve().parents[2] / "stepfunctions"
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z][A-Za-z0-9]*)\}")


def placeholders(name: str) -> set[str]:
    return set(_PLACEHOLDER.findall((DEFINITIONS / f"{name}.asl.json").read_text()))


def load_definition(name: str, substitutions: dict[str, str]) -> str:
    """The ASL of `name` with every placeholder replaced; an unknown or missing one is an error."""
    text = (DEFINITIONS / f"{name}.asl.json").read_text()
    missing = placeholders(name) - set(substitutions)
    if missing:
        raise KeyError(f"{name}: no value for {', '.join(sorted(missing))}")
    unknown = set(substitutions) - placeholders(name)
    if unknown:
        raise KeyError(f"{name}: {', '.join(sorted(unknown))} is not a placeholder of this definition")
    text = _PLACEHOLDER.sub(lambda m: substitutions[m.group(1)], text)
    json.loads(text)  # still valid JSON after substitution
    return text
