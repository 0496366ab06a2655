"""The smoke test's verdict: the new variant's answer to the manifest's sample, sent to it alone
(TargetVariant) before it takes any traffic."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["SmokeTestFailed", "check_smoke"]


class SmokeTestFailed(Exception):
    """The new variant's answer to the manifest's sample is not what the model promises."""


def check_smoke(state: dict[str, Any]) -> dict[str, Any]:
    """The new variant's answer to the manifest's sample: one prediction per record, each with a
    prediction (and a confidence in [0, 1] where it has one)."""
    expected = int(state["plan"]["smoke"]["records"])
    body = state["smoke"].get("Body")
    if isinstance(body, bytes):
        body = body.decode()
    try:
        answer = json.loads(body) if isinstance(body, str) else body
    except json.JSONDecodeError:
        raise SmokeTestFailed(f"the answer is not JSON: {str(body)[:200]!r}") from None
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    if not isinstance(predictions, list):
        raise SmokeTestFailed(f"the answer has no predictions list: {str(body)[:200]!r}")
    if len(predictions) != expected:
        raise SmokeTestFailed(f"{len(predictions)} predictions for {expected} records")
    for i, p in enumerate(predictions):
        if not isinstance(p, dict) or "prediction" not in p:
            raise SmokeTestFailed(f"prediction {i} has no 'prediction' field: {str(p)[:200]}")
        confidence = p.get("confidence")
        if confidence is not None and not 0 <= float(confidence) <= 1:
            raise SmokeTestFailed(f"prediction {i} has confidence {confidence} outside [0, 1]")
    return {"records": expected, "passed": True}
