from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
from prometheus_client.parser import text_string_to_metric_families

from sagegate.features import FeaturePipeline
from sagegate.local.process import free_port
from sagegate.packaging import BuiltPackage


def metric(client: httpx.Client, url: str, name: str, **labels: str) -> float:
    """The value of one sample on GET /metrics (0 when absent)."""
    text = client.get(f"{url}/metrics").text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def expected_positive(built: BuiltPackage, records: list[dict[str, Any]]) -> np.ndarray:
    """P(positive) computed in-process with ONNX Runtime, for comparison with the server's answers."""
    x = FeaturePipeline(built.manifest.features).transform_records(records)
    session = ort.InferenceSession(str(built.path / "model.onnx"))
    return np.asarray(session.run([built.manifest.outputs.onnx_output], {"input": x})[0])[:, 1]


class Dev:
    """`sagegate dev` as a user runs it: a subprocess on free ports, up once its gateway answers."""

    def __init__(self, home: Path, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.port, self.emulator_port = free_port(), free_port()
        self.env = {**os.environ, "SAGEGATE_HOME": str(home), "COLUMNS": "200", **(env or {})}
        self.out = (home.parent / f"dev-{self.port}.out").open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sagegate",
                "dev",
                "--port",
                str(self.port),
                "--emulator-port",
                str(self.emulator_port),
            ],
            env=self.env,
            stdout=self.out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, (home.parent / f"dev-{self.port}.out").read_text()
            time.sleep(0.2)
        raise AssertionError("sagegate dev did not come up")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sagegate", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def predict(self, user: str, features: dict) -> dict:  # type: ignore[type-arg]
        answer = httpx.post(
            f"http://127.0.0.1:{self.port}/v1/predict",
            timeout=30,
            json={"model": "fraud", "features": features, "user_id": user},
        )
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]

    def pids(self) -> list[int]:
        status = json.loads((self.home / "dev.json").read_text())
        return [status["pid"], *(p["pid"] for p in status["processes"].values())]

    def stop(self, sig: int = signal.SIGINT) -> int:
        children = self.pids()[1:] if sig == signal.SIGKILL and (self.home / "dev.json").exists() else []
        self.process.send_signal(sig)
        code = self.process.wait(60)
        for pid in children:  # a killed supervisor cannot stop its processes: a failed test does it
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.out.close()
        return code


def alive(pid: int) -> bool:
    """Running, not just a zombie waiting for a parent that is gone to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
