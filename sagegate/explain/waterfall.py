"""Explanations drawn for a terminal (rich): one prediction's waterfall, a model's importance."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.table import Table
from rich.text import Text

from sagegate.manifest import ExplainerSpec

__all__ = ["importance_table", "waterfall"]

_BAR = 30  # characters of the longest bar


def _bar(value: float, largest: float) -> Text:
    cells = round(abs(value) / largest * _BAR) if largest > 0 else 0
    return Text("█" * max(cells, 1 if value else 0), style="red" if value > 0 else "blue")


def waterfall(explanation: Mapping[str, Any], features: Mapping[str, Any]) -> Table:
    """From the base value to the output, one row per feature, largest contribution first."""
    contributions = sorted(explanation["contributions"].items(), key=lambda kv: -abs(kv[1]))
    largest = max((abs(v) for _, v in contributions), default=0.0)
    space, running = explanation["output_space"], float(explanation["base_value"])
    table = Table(title=f"why ({explanation['method']}, {space} of {explanation.get('explained') or 'the output'})")
    for column in ("feature", "value", "contribution", "", "running total"):
        table.add_column(column, justify="right" if column in ("contribution", "running total") else "left")
    table.add_row("base value", "", "", "", f"{running:.4f}")
    for name, value in contributions:
        running += value
        table.add_row(name, str(features.get(name, "")), f"{value:+.4f}", _bar(value, largest), f"{running:.4f}")
    table.add_row("output", "", "", "", f"{float(explanation['output']):.4f}", style="bold")
    return table


def importance_table(spec: ExplainerSpec, *, version: str | None = None) -> Table:
    """Mean |contribution| per feature over the package's background, largest first (`version`:
    the model version it is of, named in the title)."""
    ranked = sorted(spec.importance.items(), key=lambda kv: -kv[1])
    largest = max((v for _, v in ranked), default=0.0)
    of = f" of v{version}" if version is not None else ""
    table = Table(title=f"feature importance{of}: mean |contribution| ({spec.method}, {spec.output_space})")
    for column in ("feature", "importance", ""):
        table.add_column(column)
    for name, value in ranked:
        table.add_row(name, f"{value:.4f}", _bar(value, largest))
    return table
