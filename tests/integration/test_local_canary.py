"""A canary ramp on the local stack under live traffic: promoted when healthy, rolled back on a breach."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import httpx
import pytest

from sagegate.packaging import BuiltPackage
from tests.integration.test_local_stack import Dev

pytestmark = pytest.mark.integration


def test_canary_promotes_then_a_breach_rolls_back(
    tmp_path: Path, fraud_logreg: BuiltPackage, fraud_xgboost: BuiltPackage
) -> None:
    dev = Dev(tmp_path / "state")
    stop = threading.Event()
    try:
        xgb = tmp_path / "xgb"
        shutil.copytree(fraud_xgboost.path, xgb)
        (xgb / "manifest.json").write_text(fraud_xgboost.manifest.model_copy(update={"name": "fraud"}).dumps())
        (xgb / "model.tar.gz").unlink()
        for package, version in ((fraud_logreg.path, "1"), (xgb, "2")):
            assert dev.cli("register", str(package)).returncode == 0
            assert dev.cli("models", "approve", "fraud", version, "--by", "ci").returncode == 0
        assert dev.cli("deploy", "fraud", "--version", "1").returncode == 0

        def traffic() -> None:  # distinct amounts: every request misses the cache and reaches a server
            with httpx.Client(timeout=30) as client:
                i = 0
                while not stop.is_set():
                    i += 1
                    client.post(
                        f"http://127.0.0.1:{dev.port}/v1/predict",
                        json={
                            "model": "fraud",
                            "user_id": f"user-{i % 500}",
                            "features": {"amount": 10 + i * 0.01, "hour": i % 24, "merchant_category": "fuel"},
                        },
                    )

        sender = threading.Thread(target=traffic, daemon=True)
        sender.start()
        promoted = dev.cli(
            "deploy",
            "fraud",
            "--version",
            "2",
            "--strategy",
            "canary",
            "--steps",
            "20,50,100",
            "--bake-seconds",
            "2",
            "--min-requests",
            "3",
            "--max-p99-ms",
            "5000",
        )
        assert promoted.returncode == 0, promoted.stderr
        assert "fraud on fraud-local: v2 (v2) 100%" in promoted.stderr

        breached = dev.cli(
            "deploy",
            "fraud",
            "--version",
            "1",
            "--strategy",
            "canary",
            "--steps",
            "20,100",
            "--bake-seconds",
            "5",
            "--min-requests",
            "1",
            "--max-p99-ms",
            "0.0001",
        )
        assert breached.returncode == 1
        assert "v1 rolled back at 20%: p99 latency" in breached.stderr
        shown = dev.cli("predict", "fraud", "--features", '{"amount": 5, "hour": 1, "merchant_category": "fuel"}')
        assert '"variant": "v2"' in shown.stdout  # the previous route is back
    finally:
        stop.set()
        if dev.process.poll() is None:
            assert dev.stop() == 0
