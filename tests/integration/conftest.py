"""Inference servers started as real processes (`python -m sagegate serve`) and spoken to over HTTP."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from sagegate.local.process import ServerProcess, free_port, redis_server_command
from sagegate.packaging import BuiltPackage
from tests.toy_models import heavy_package

pytestmark = pytest.mark.integration

StartServer = Callable[..., ServerProcess]


@pytest.fixture(scope="session")
def heavy(packages_dir: Path) -> BuiltPackage:
    # ~110 MB of weights: loading and a warm-up up to batch 1024 take seconds, not milliseconds.
    return heavy_package(packages_dir / "heavy", hidden=3072, layers=4)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    started: list[ServerProcess] = []

    def start(
        *packages: BuiltPackage | Path, args: tuple[str, ...] = (), env: dict[str, str] | None = None, wait: bool = True
    ) -> ServerProcess:
        model_dir = tmp_path / f"models-{len(started)}"
        model_dir.mkdir()
        for package in packages:
            source = package.path if isinstance(package, BuiltPackage) else package
            shutil.copytree(source, model_dir / source.name)
        server = ServerProcess(
            model_dir, free_port(), tmp_path / f"server-{len(started)}.log", extra_args=args, env=env
        )
        started.append(server)
        if wait:
            server.wait_healthy(timeout=120)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as c:
        yield c


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real redis-server on loopback for one test: its URL and process."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run `make services` (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        redis_server_command(binary, port, tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.02)
    yield url, process
    process.kill()
    process.wait()
