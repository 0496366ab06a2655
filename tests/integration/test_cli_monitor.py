"""`sagegate monitor` as a user runs it over the local stack's prediction log: its exit codes, its
one-line errors, and its HTML report rendered in headless Chromium with the plots drawn."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from sagegate.local.data import generate_transactions
from sagegate.local.stack import StackPaths
from sagegate.packaging import BuiltPackage
from sagegate.registry import LocalRegistry
from tests.toy_models import log_package
from tests.unit.monitoring.conftest import NOW, log_lines, shifted, write_log

pytestmark = pytest.mark.integration
AT = NOW.isoformat()


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAGEGATE_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "sagegate", "monitor", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.fixture
def home(tmp_path: Path, fraud_logreg: BuiltPackage) -> Path:
    """A state folder with fraud v1 (with its baseline) and logarithm v1 (packaged without) registered."""
    home = tmp_path / "state"
    registry = LocalRegistry(StackPaths(home).registry)
    registry.register(fraud_logreg.path)
    registry.register(log_package(tmp_path / "log-pkg").path)
    return home


def _traffic(home: Path, fraud: BuiltPackage, *, drift: bool) -> None:
    data = generate_transactions(1500, seed=77)
    manifest = LocalRegistry(StackPaths(home).registry).get("fraud", "1").manifest
    records = shifted(data) if drift else data.records
    write_log(StackPaths(home).predictions, log_lines(fraud, records, labels=data.label, manifest=manifest))


def _one_error_line(done: subprocess.CompletedProcess[str], text: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and text in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_bad_input_is_one_line_and_exit_2(home: Path, fraud_logreg: BuiltPackage) -> None:
    _one_error_line(run(home, "fraud", "--at", AT), "no prediction log")
    _traffic(home, fraud_logreg, drift=False)
    _one_error_line(run(home, "nope", "--at", AT), "unknown model 'nope'")
    _one_error_line(run(home, "fraud", "--window", "1x", "--at", AT), "bad window '1x'")
    _one_error_line(run(home, "fraud", "--version", "9", "--at", AT), "has no version '9'")
    _one_error_line(run(home, "logarithm", "--version", "1", "--at", AT), "has no baseline")
    _one_error_line(run(home, "fraud", "--at", "yesterday"), "bad --at")
    _one_error_line(run(home, "fraud", "--at", (NOW + timedelta(hours=5)).isoformat()), "no predictions")


def test_clean_traffic_passes_and_drifted_traffic_fails_naming_what_moved(
    home: Path, fraud_logreg: BuiltPackage, tmp_path: Path
) -> None:
    _traffic(home, fraud_logreg, drift=False)
    clean = run(home, "fraud", "--at", AT, "--all")
    # bias on is_foreign is a finding about the model (it flags foreign transactions more), not the traffic
    failed = [line for line in clean.stdout.splitlines() if re.search(r"│ fail\b", line) and "│ bias " not in line]
    assert failed == [], clean.stdout
    assert "psi" in clean.stdout and "missing_rate_increase" in clean.stdout  # --all lists the passed ones

    later = NOW + timedelta(hours=1)
    data = generate_transactions(1500, seed=78)
    manifest = LocalRegistry(StackPaths(home).registry).get("fraud", "1").manifest
    write_log(
        StackPaths(home).predictions,
        log_lines(fraud_logreg, shifted(data), manifest=manifest, start=later - timedelta(minutes=50)),
    )
    report = tmp_path / "report.html"
    drifted = run(home, "fraud", "--window", "1h", "--at", later.isoformat(), "--report", str(report))
    assert drifted.returncode == 1, drifted.stdout + drifted.stderr
    for text in ("amount", "merchant_category", "score_tvd", "psi", "fail", "drifted: amount"):
        assert text in drifted.stdout, drifted.stdout
    assert report.is_file() and f"report -> {report}" in drifted.stdout
    _rendered(report, drifted.stdout)


def _rendered(report: Path, printed: str) -> None:
    """Chromium runs the page (offline: plotly.js is inlined) and each plot has drawn its SVG."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium is not None, "Chromium is needed to render the report: `make services` installs it"
    dom = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=15000",
            "--dump-dom",
            report.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    sections = re.findall(
        r'<section class="plot" data-kind="(\w+)"(?: data-feature="([^"]+)")?>(.*?)</section>', dom, re.S
    )
    drawn = {(kind, feature) for kind, feature, body in sections if 'class="main-svg"' in body}
    assert {(kind, feature) for kind, feature, _ in sections} == drawn, "a plot did not render"
    listed = re.search(r"drifted: ([^\n]+)", printed)
    assert listed is not None
    expected = {name.strip() for name in listed.group(1).split(",")}
    assert {feature for kind, feature in drawn if kind == "feature"} == expected and len(expected) >= 2
    assert ("prediction", "") in drawn and ("bias", "is_foreign") in drawn
