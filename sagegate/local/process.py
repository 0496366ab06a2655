"""Local child processes, one abstraction for all of them: start in a process group of its own,
log to a file, probe health, stop without orphans.

`Child` is what the local stack's supervisor (`sagegate.local.stack`) keeps alive and what the tests
and benchmarks start servers with (`ServerProcess`): the same code spawns, probes and stops them.
A probe is an HTTP GET that must answer 200 (`http://...`) or a TCP connect (`tcp://host:port`),
each within `probe_timeout`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Child", "ChildSpec", "ServerProcess", "free_port", "probe", "redis_server_command", "wait_healthy"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_command(binary: str, port: int, directory: Path) -> list[str]:
    """A throw-away redis-server on loopback: no snapshots, no append-only file."""
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
    ]


def probe(target: str, timeout: float = 1.0) -> bool:
    """Whether `target` answers within `timeout`: an HTTP URL with a 200, `redis://host:port` with
    +PONG to a PING, or `tcp://host:port` accepting a connection. (A stopped process's port still
    accepts connections, the kernel completes them: only an answer shows it is working.)"""
    if target.startswith(("tcp://", "redis://")):
        host, _, port = target.split("://", 1)[1].split("/", 1)[0].rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout) as sock:
                if target.startswith("tcp://"):
                    return True
                sock.settimeout(timeout)
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False
    try:
        with urllib.request.urlopen(target, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
        return False


def wait_healthy(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before it was healthy")
        if probe(url):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{url} was not healthy within {timeout:g}s")


@dataclass(frozen=True)
class ChildSpec:
    name: str
    command: list[str]
    health: str  # http://host:port/path (200), redis://host:port (PING) or tcp://host:port
    log: Path
    url: str = ""  # what others use to reach it (defaults to the health target's origin)
    env: dict[str, str] = field(default_factory=dict)
    start_timeout: float = 120.0  # time to the first healthy probe
    unhealthy_after: float = 3.0  # seconds without a healthy probe, once healthy, before it is replaced


class Child:
    """One process of a spec: started, probed, stopped; `start` again after it ends makes a new one."""

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def url(self) -> str:
        if self.spec.url or not self.spec.health.startswith("http"):
            return self.spec.url or self.spec.health
        return "/".join(self.spec.health.split("/", 3)[:3])  # http://host:port

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        self.spec.log.parent.mkdir(parents=True, exist_ok=True)
        with self.spec.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.spec.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.spec.env},
                start_new_session=True,  # its own process group: a stop reaches its children too
            )
        self.started_at = time.monotonic()

    def exit_code(self) -> int | None:
        """None while it runs (or was never started)."""
        return self.process.poll() if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def probe(self, timeout: float = 1.0) -> bool:
        return self.running() and probe(self.spec.health, timeout)

    def wait_healthy(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (self.spec.start_timeout if timeout is None else timeout)
        while time.monotonic() < deadline:
            code = self.exit_code()
            if code is not None:
                raise RuntimeError(f"{self.name} exited with code {code} before it was healthy; {self._tail()}")
            if probe(self.spec.health):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} was not healthy within {timeout:g}s; {self._tail()}")

    def _tail(self) -> str:
        try:
            lines = self.spec.log.read_text(errors="replace").strip().splitlines()[-3:]
        except OSError:
            return "no log"
        return "last log lines: " + " | ".join(lines)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM to its group (a server drains in-flight requests), SIGKILL if it hangs past `timeout`."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return process.returncode

    def kill(self) -> None:
        """SIGKILL to its group, now (a hung process ignores SIGTERM), and reap it. A stopped
        (SIGSTOP) process is killed too: SIGKILL needs no cooperation."""
        process = self.process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)


def serve_command(model_dir: Path, port: int, extra_args: Sequence[str] = ()) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sagegate",
        "serve",
        "--model-dir",
        str(model_dir),
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        *extra_args,
    ]


class ServerProcess(Child):
    """`sagegate serve` on loopback, started at once (tests and benchmarks)."""

    def __init__(
        self,
        model_dir: Path,
        port: int,
        log_path: Path,
        *,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        url = f"http://127.0.0.1:{port}"
        super().__init__(
            ChildSpec(
                name=f"server :{port}",
                command=serve_command(model_dir, port, extra_args),
                health=f"{url}/ping",
                url=url,
                log=log_path,
                # One process unless asked for more: tests and benchmarks run many servers at once.
                env={"SAGEGATE_WORKERS": "1", **(env or {})},
            )
        )
        self.port = port
        self.log_path = log_path
        self.start()

    def stop(self, timeout: float = 30.0) -> int | None:
        return super().stop(timeout)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
