"""cdk-nag (AwsSolutions) acknowledgments, each with its reason. Not done yet: `python -m infra.app`
runs the checks and lists the open findings (see the README's deployment section)."""

from __future__ import annotations

from typing import Any

from aws_cdk import Stack


def acknowledge_stack(stack: Stack, **parts: Any) -> None:
    """Placeholder until the findings are resolved or acknowledged with reasons (issue 5)."""
    return None
