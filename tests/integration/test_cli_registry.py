"""`sagegate register` and `sagegate models ...` as a user runs them, on the local target."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sagegate.packaging import BuiltPackage

pytestmark = pytest.mark.integration


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAGEGATE_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "sagegate", *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_register_list_show_approve_reject_stage(tmp_path: Path, fraud_logreg: BuiltPackage) -> None:
    home = tmp_path / "state"
    first = run(home, "register", str(fraud_logreg.path))
    assert first.returncode == 0, first.stderr
    assert "registered fraud v1" in first.stderr
    again = run(home, "register", str(fraud_logreg.archive))
    assert "already registered as fraud v1" in again.stderr

    listed = run(home, "models", "list")
    assert listed.returncode == 0 and "fraud" in listed.stdout and "PendingManualApproval" in listed.stdout

    approved = run(home, "models", "approve", "fraud", "1", "--by", "alice", "--reason", "holdout AUC 0.97")
    assert approved.returncode == 0 and "approved fraud v1 by alice" in approved.stderr
    staged = run(home, "models", "stage", "fraud", "1", "production")
    assert "now in production" in staged.stderr
    shown = run(home, "models", "show", "fraud")
    assert "Approved" in shown.stdout and "production" in shown.stdout and "alice" in shown.stdout
    # the importance of the version that serves (the latest approved): mean |contribution| per feature
    assert fraud_logreg.manifest.explainer is not None
    assert "feature importance of v1" in shown.stdout
    importance = shown.stdout[shown.stdout.index("feature importance of v1") :]
    for name, value in fraud_logreg.manifest.explainer.importance.items():
        assert f"{name} " in importance and f"{value:.4f}" in importance, (name, importance)
    detail = run(home, "models", "show", "fraud", "--version", "1")
    assert '"decision_reason": "holdout AUC 0.97"' in detail.stdout and '"sha256"' in detail.stdout
    rejected = run(home, "models", "reject", "fraud", "1", "--by", "bob", "--reason", "drift")
    assert rejected.returncode == 0 and "rejected fraud v1 by bob: drift" in rejected.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["register", "/nonexistent/pkg"], "no model package at /nonexistent/pkg"),
        (["register", "{pkg}", "--stage", "qa"], "stage must be dev, staging or production"),
        (["models", "approve", "fraud", "7", "--by", "x"], "model 'fraud' has no version '7'"),
        (["models", "show", "churn"], "model 'churn' is not registered"),
        (["models", "list", "--target", "aws"], "target 'aws' needs"),
        (["models", "list", "--target", "prod"], "unknown target 'prod'"),
    ],
)
def test_errors_are_one_line(tmp_path: Path, fraud_logreg: BuiltPackage, args: list[str], message: str) -> None:
    home = tmp_path / "state"
    run(home, "register", str(fraud_logreg.path))
    done = run(home, *[a.replace("{pkg}", str(fraud_logreg.path)) for a in args])
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], done.stderr
