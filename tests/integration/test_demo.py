"""`sagegate demo` with a reduced request count, as a subprocess: what it prints, and what it leaves."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sagegate.local.process import free_port

pytestmark = pytest.mark.integration


def test_the_demo_runs_the_ab_test_and_reports_it(tmp_path: Path) -> None:
    env = {**os.environ, "SAGEGATE_HOME": str(tmp_path / "state")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sagegate",
            "demo",
            "--requests",
            "600",
            "--no-serve",
            "--port",
            str(free_port()),
            "--emulator-port",
            str(free_port()),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    rows = {
        m.group(1): m
        for m in re.finditer(
            r"│\s+(v[12])\s+│\s+([12])\s+│\s+(\d+)\s+│\s+([\d.]+)%\s+│\s+([\d.]+)\s+│\s+([\d.]+)\s+│\s+([\d.]+)%", out
        )
    }
    assert set(rows) == {"v1", "v2"}, out
    requests = {v: int(m.group(3)) for v, m in rows.items()}
    assert requests["v1"] + requests["v2"] == 600
    assert 0.10 < requests["v2"] / 600 < 0.30  # an 80/20 split by user: 600 requests from 600 users
    assert float(rows["v1"].group(7)) > 0  # some repeated transactions were answered from the cache
    assert "Hanley-McNeil z-test" in out or "not enough outcomes" in out
    assert "API docs: http://127.0.0.1:" in out
    assert "sagegate models list" in out
    # the demo's stack is gone: its status file is removed, its registry stays for `models list`
    assert not (tmp_path / "state" / "demo" / "dev.json").exists()
    listed = subprocess.run(
        [sys.executable, "-m", "sagegate", "models", "list"],
        capture_output=True,
        text=True,
        env={**env, "SAGEGATE_HOME": str(tmp_path / "state" / "demo"), "COLUMNS": "200"},
        timeout=60,
        check=False,
    )
    assert "fraud" in listed.stdout and "Approved" in listed.stdout
