"""Monitoring's dependencies stay out of the gateway: not in the Lambda bundle's requirements, not
imported by the gateway's modules (which write the log that monitoring reads)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_lambda_bundle_installs_none_of_the_monitoring_extra() -> None:
    from infra.constructs.bundling import lambda_requirements

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    monitoring = _names(extras["monitoring"])
    assert {"duckdb", "fairlearn", "plotly"} <= monitoring
    assert not monitoring & _names(lambda_requirements())


def test_the_gateway_imports_no_monitoring_engine() -> None:
    probe = (
        "import sys, sagegate.gateway.app, sagegate.gateway.prediction_log; "
        "print(sorted(m for m in ('numpy', 'duckdb', 'fairlearn', 'plotly', 'pandas') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]"
