"""Names of the SageMaker resources the workflows create: at most 63 characters of [A-Za-z0-9-]
(the pattern of model, endpoint-config and job names), under the environment's prefix (which the
workflows' IAM roles are scoped to), keeping the part that makes each one unique."""

from __future__ import annotations

import hashlib
import re

__all__ = ["MAX_NAME", "sagemaker_name", "short_hash"]

MAX_NAME = 63
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9-]+")


def short_hash(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def sagemaker_name(*parts: str, suffix: str) -> str:
    """`parts` joined by '-', cut so that '-<suffix>' still fits in 63 characters."""
    head = _NOT_ALLOWED.sub("-", "-".join(p for p in parts if p)).strip("-")
    head = head[: MAX_NAME - len(suffix) - 1].rstrip("-")
    return f"{head}-{suffix}" if head else suffix
