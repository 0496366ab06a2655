"""`sagegate serve --workers N`: N processes with their own models on one port (and one gRPC port),
ready together, restarted when one dies, within one memory budget."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc

from sagegate.local.examples import build_synthetic_package
from sagegate.local.process import free_port
from sagegate.packaging import BuiltPackage
from tests.integration.conftest import StartServer
from tests.integration.helpers import metric
from tests.toy_models import heavy_package

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def small_mlp(packages_dir: Path) -> BuiltPackage:
    return build_synthetic_package(packages_dir / "workers" / "mlp", "mlp", hidden=(16, 8), name="mlp")


def _workers(parent: int) -> set[int]:
    """The worker processes of a server (spawned children; not multiprocessing's resource tracker)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == parent and b"spawn_main" in (entry / "cmdline").read_bytes():
                found.add(int(entry.name))
    return found


def _wait(condition: object, what: str, timeout: float = 120, poll: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(poll)


def _dead(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def test_two_workers_share_the_ports_and_one_is_replaced_when_it_dies(
    start_server: StartServer, small_mlp: BuiltPackage
) -> None:
    grpc_port = free_port()
    server = start_server(small_mlp, args=("--grpc-port", str(grpc_port)), env={"SAGEGATE_WORKERS": "2"})
    assert server.pid is not None
    workers = _workers(server.pid)
    assert len(workers) == 2
    x = np.random.default_rng(0).normal(size=(4, 30)).astype(np.float32)
    tensor = triton_grpc.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    answers = []
    for _ in range(8):  # new connections each: the kernel spreads them over the workers
        with triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}") as client:
            answers.append(client.infer("mlp", [tensor]).as_numpy("prediction"))
        reply = httpx.post(f"{server.url}/invocations", json={"instances": x.astype(float).tolist()})
        assert reply.status_code == 200
    for answer in answers[1:]:
        np.testing.assert_array_equal(answer, answers[0])
    # Whichever worker answers /metrics, it counts every worker's records: 16 requests of 4.
    for _ in range(4):
        with httpx.Client() as fresh:  # a new connection each: another worker, as the kernel picks
            assert metric(fresh, server.url, "sagegate_records_total", model="mlp") == 64

    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    _wait(lambda: _dead(victim), "the killed worker did not die", poll=0.002)
    # Dead (a zombie, or reaped): not ready from now on, whether or not its parent has noticed yet
    # (its ready flag stayed set until the parent's next look, up to 0.2 s later: /ping said 200).
    assert _ping(server.url) == 503
    _wait(lambda: len(_workers(server.pid or 0) - {victim}) == 2, "the dead worker was not replaced")
    _wait(lambda: httpx.get(f"{server.url}/ping").status_code == 200, "not ready again after the restart")
    assert server.running()
    assert server.stop() == 0  # SIGTERM drains and stops every worker
    assert not _workers(server.pid)


def test_ping_is_200_only_once_every_worker_has_loaded(start_server: StartServer, heavy: BuiltPackage) -> None:
    server = start_server(heavy, args=("--max-batch-size", "256"), env={"SAGEGATE_WORKERS": "2"}, wait=False)
    _wait(lambda: _ping(server.url) == 200, "never ready")
    loaded = [line for line in server.log_path.read_text().splitlines() if "loaded heavy" in line]
    assert len(loaded) == 2, loaded


def _ping(url: str) -> int:
    try:
        return httpx.get(f"{url}/ping").status_code
    except httpx.TransportError:
        return 0


def test_the_memory_budget_is_shared_by_the_copies(start_server: StartServer, tmp_path: Path) -> None:
    """A model that fits the budget once does not fit it twice: with two workers, each has half."""
    package = heavy_package(tmp_path / "mid", hidden=1024, layers=2, name="mid")  # about 9 MB to load
    one = start_server(package, args=("--memory-budget-mb", "15"), env={"SAGEGATE_WORKERS": "1"})
    assert httpx.get(f"{one.url}/ping").status_code == 200
    two = start_server(package, args=("--memory-budget-mb", "15"), env={"SAGEGATE_WORKERS": "2"}, wait=False)
    assert two.process is not None
    assert two.process.wait(120) == 1
    assert "MB are in use" in two.log_path.read_text()


def test_a_killed_server_leaves_no_workers(start_server: StartServer, small_mlp: BuiltPackage) -> None:
    server = start_server(small_mlp, env={"SAGEGATE_WORKERS": "2"})
    assert server.pid is not None
    workers = _workers(server.pid)
    assert len(workers) == 2
    os.kill(server.pid, signal.SIGKILL)  # the parent only: its workers get its death signal
    _wait(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), "workers outlived their server", 60)


def test_a_grpc_port_in_use_stops_every_worker(start_server: StartServer, small_mlp: BuiltPackage) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = start_server(small_mlp, args=("--grpc-port", str(port)), env={"SAGEGATE_WORKERS": "2"}, wait=False)
        assert server.process is not None
        assert server.process.wait(120) == 1  # not started again and again
    assert "cannot listen for gRPC" in server.log_path.read_text()
