"""`sagegate dev`, `deploy`, `rollback`, `undeploy` as a user runs them: subprocesses, real HTTP."""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sagegate.packaging import BuiltPackage
from tests.integration.helpers import Dev, alive

pytestmark = pytest.mark.integration


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "state"


def _predict_and_bench(dev: Dev, features: dict) -> None:  # type: ignore[type-arg]
    asked = dev.cli("predict", "fraud", "--features", json.dumps(features), "--user", "u1")
    assert asked.returncode == 0 and '"variant": "v1"' in asked.stdout, asked.stderr
    bad = dev.cli("predict", "fraud", "--features", json.dumps({**features, "hour": 99}))
    assert bad.returncode == 1 and bad.stderr.startswith("error: 422: invalid features: hour")
    loaded = dev.cli("bench", "fraud", "--requests", "200", "--concurrency", "8")
    assert loaded.returncode == 0, loaded.stderr
    assert "200 answered, 0 failed" in loaded.stdout and "latency histogram" in loaded.stdout


def _speaks_oip(server: dict) -> None:  # type: ignore[type-arg]
    """Each deployed version's server answers OIP v2 over REST (its URL) and gRPC (its own port)."""
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton_http

    rest = triton_http.InferenceServerClient(server["url"].removeprefix("http://"))
    assert rest.is_model_ready("fraud", "1")
    with triton_grpc.InferenceServerClient(server["grpc"]) as grpc:
        assert grpc.is_server_ready()
        assert grpc.get_model_metadata("fraud", "1").versions == ["1"]


def test_deploy_ab_rollback_restart_and_a_clean_stop(
    home: Path, fraud_logreg: BuiltPackage, fraud_xgboost: BuiltPackage, tmp_path: Path
) -> None:
    features = {"amount": 42.5, "hour": 3, "merchant_category": "gaming", "channel": "web"}
    dev = Dev(home)
    try:
        assert dev.cli("register", str(fraud_logreg.path)).returncode == 0
        refused = dev.cli("deploy", "fraud", "--version", "1")
        assert refused.returncode == 1 and "approve it first" in refused.stderr
        assert dev.cli("models", "approve", "fraud", "1", "--by", "ci").returncode == 0
        deployed = dev.cli("deploy", "fraud", "--version", "1")
        assert deployed.returncode == 0, deployed.stderr
        assert "v1 (v1) 100%" in deployed.stderr
        first = dev.predict("u1", features)
        assert (first["variant"], first["model_version"]) == ("v1", "1")
        _predict_and_bench(dev, features)
        _speaks_oip(json.loads((home / "dev.json").read_text())["servers"]["fraud:1"])

        xgb = tmp_path / "xgb"
        shutil.copytree(fraud_xgboost.path, xgb)
        (xgb / "manifest.json").write_text(fraud_xgboost.manifest.model_copy(update={"name": "fraud"}).dumps())
        (xgb / "model.tar.gz").unlink()
        assert dev.cli("register", str(xgb)).returncode == 0
        assert dev.cli("models", "approve", "fraud", "2", "--by", "ci").returncode == 0
        ab = dev.cli("deploy", "fraud", "--version", "2", "--traffic", "20")
        assert ab.returncode == 0 and "v1 (v1) 80%, v2 (v2) 20%" in ab.stderr, ab.stderr
        variants = {dev.predict(f"user-{i}", features)["variant"] for i in range(60)}
        assert variants == {"v1", "v2"}

        rolled = dev.cli("rollback", "fraud")
        assert rolled.returncode == 0 and "v1 (v1) 100%" in rolled.stderr
        assert {dev.predict(f"user-{i}", features)["variant"] for i in range(20)} == {"v1"}
        pids = dev.pids()
        assert dev.stop() == 0
    finally:
        if dev.process.poll() is None:
            dev.stop(signal.SIGKILL)
    time.sleep(0.5)
    assert [p for p in pids if alive(p)] == []  # no orphans
    assert not (home / "dev.json").exists()

    again = Dev(home)  # restarted: the same deployment comes back
    try:
        assert again.predict("u1", features)["variant"] == "v1"
        assert again.cli("undeploy", "fraud").returncode == 0
        deadline = time.monotonic() + 30  # the gateway's catalog cache lets the route go within its TTL
        while (
            status := httpx.post(
                f"http://127.0.0.1:{again.port}/v1/predict", timeout=30, json={"model": "fraud", "features": features}
            ).status_code
        ) != 404:
            assert time.monotonic() < deadline, f"still {status} after undeploy"
            time.sleep(0.2)
        assert again.stop(signal.SIGTERM) == 0
    finally:
        if again.process.poll() is None:
            again.stop(signal.SIGKILL)


def test_a_killed_supervisor_leaves_nothing_once_dev_starts_again(home: Path, fraud_logreg: BuiltPackage) -> None:
    dev = Dev(home)
    assert dev.cli("register", str(fraud_logreg.path)).returncode == 0
    assert dev.cli("models", "approve", "fraud", "1", "--by", "ci").returncode == 0
    assert dev.cli("deploy", "fraud", "--version", "1").returncode == 0
    orphans = dev.pids()[1:]
    dev.process.kill()  # kill -9: the supervisor cannot clean up
    dev.process.wait()
    dev.out.close()
    assert all(alive(pid) for pid in orphans)
    again = Dev(home)
    try:
        time.sleep(0.5)
        assert [pid for pid in orphans if alive(pid)] == []
        assert (
            "stopped 4 processes left by a local stack that was killed"
            in (home.parent / f"dev-{again.port}.out").read_text()
        )
        assert again.predict("u1", {"amount": 5.0, "hour": 1, "merchant_category": "fuel"})["variant"] == "v1"
    finally:
        assert again.stop() == 0
