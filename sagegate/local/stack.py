"""`sagegate dev`: the whole product on one machine, and the supervisor that owns every process.

The desired state lives in SQLite (the registry, the route store, pending deployments); the
supervisor reconciles the processes with it twice a second: one `sagegate serve` per deployed
(model, version), the runtime emulator's endpoints and weights, the gateway. `sagegate deploy`
only writes desired state and waits for the supervisor to report the new server healthy, so every
process has one owner and Ctrl-C leaves none behind. Restarting `sagegate dev` brings the same
deployments back.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sagegate.deploy.routes import SqliteRouteStore
from sagegate.local.process import free_port, redis_server_command
from sagegate.packaging.archive import extract_archive
from sagegate.registry import LocalRegistry

__all__ = ["DevStack", "StackPaths", "read_status", "reap_orphans"]


@dataclass(frozen=True)
class StackPaths:
    root: Path

    @property
    def registry(self) -> Path:
        return self.root / "registry"

    @property
    def routes(self) -> Path:
        return self.root / "routes.sqlite3"

    @property
    def status(self) -> Path:
        return self.root / "dev.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def deployments(self) -> Path:
        return self.root / "deployments"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.jsonl"


def read_status(paths: StackPaths) -> dict[str, Any] | None:
    """What a running `sagegate dev` reports, or None when none is running."""
    try:
        status: dict[str, Any] = json.loads(paths.status.read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(int(status["pid"]), 0)
    except (OSError, KeyError, ValueError):
        return None
    return status


def reap_orphans(paths: StackPaths) -> list[int]:
    """Stops the processes a killed supervisor left behind (its dev.json names them); returns their pids.

    Only processes that are still ours are signalled: a pid whose command line no longer mentions
    sagegate, uvicorn or redis-server has been reused by something else."""
    if read_status(paths) is not None or not paths.status.exists():
        return []
    try:
        stale = json.loads(paths.status.read_text())
    except ValueError:
        return []
    reaped = []
    for process in stale.get("processes", {}).values():
        pid = int(process.get("pid", 0))
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if any(word in command for word in (b"sagegate", b"uvicorn", b"redis-server")):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
                reaped.append(pid)
    paths.status.unlink(missing_ok=True)
    return reaped


# -- the supervisor -------------------------------------------------------------------------------


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    healthy: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


class DevStack:
    def __init__(
        self, paths: StackPaths, *, gateway_port: int = 8000, emulator_port: int = 8001, redis_url: str | None = None
    ) -> None:
        self.paths = paths
        self.gateway_port = gateway_port
        self.emulator_port = emulator_port
        self.redis_url = redis_url
        self.children: dict[str, _Child] = {}
        self.servers: dict[tuple[str, str], _Child] = {}
        self.notes: list[str] = []
        self._endpoints: str = ""
        paths.logs.mkdir(parents=True, exist_ok=True)
        self.registry = LocalRegistry(paths.registry)
        self.routes = SqliteRouteStore(paths.routes)

    def _spawn(self, name: str, command: list[str], url: str, env: dict[str, str] | None = None) -> _Child:
        log = self.paths.logs / f"{name}.log"
        handle = log.open("ab")
        process = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **(env or {})}
        )
        handle.close()
        return _Child(name, process, url, log)

    # -- start --------------------------------------------------------------------------------

    def start(self) -> None:
        self._start_redis()
        emulator_config = self.paths.root / "endpoints.json"
        emulator_config.write_text("[]")
        self.children["emulator"] = self._spawn(
            "emulator",
            [
                sys.executable,
                "-m",
                "sagegate.local.emulator",
                "--port",
                str(self.emulator_port),
                "--config",
                str(emulator_config),
            ],
            f"http://127.0.0.1:{self.emulator_port}",
        )
        env = {
            "SAGEGATE_GATEWAY_STATE_DIR": str(self.paths.root.resolve()),
            "SAGEGATE_GATEWAY_ENDPOINT_URL": self.children["emulator"].url,
            "SAGEGATE_GATEWAY_REGION": "local",
            "SAGEGATE_GATEWAY_CATALOG_TTL_S": "0.5",
            "SAGEGATE_GATEWAY_PREDICTION_LOG_PATH": str(self.paths.predictions.resolve()),
            "SAGEGATE_GATEWAY_ENDPOINT_READ_TIMEOUT_S": "10",
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "local"),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "local"),
        }
        if self.redis_url:
            env["SAGEGATE_GATEWAY_REDIS_URL"] = self.redis_url
        self.children["gateway"] = self._spawn(
            "gateway",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "sagegate.gateway.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.gateway_port),
                "--log-level",
                "warning",
            ],
            f"http://127.0.0.1:{self.gateway_port}",
            env,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.reconcile()
            if all(c.healthy for c in self.children.values()):
                return
            time.sleep(0.2)
        unhealthy = [c.name for c in self.children.values() if not c.healthy]
        raise RuntimeError(f"{', '.join(unhealthy)} did not become healthy; see {self.paths.logs}")

    def _start_redis(self) -> None:
        if self.redis_url:
            self.notes.append(f"cache and online features: Redis at {self.redis_url}")
            return
        binary = shutil.which("redis-server")
        if binary is None:
            self.redis_url = "memory://"
            self.notes.append(
                "redis-server is not installed: the gateway caches in its own memory "
                "(install redis-server, or set REDIS_URL, for the real thing)"
            )
            return
        port = free_port()
        self.children["redis"] = self._spawn(
            "redis",
            redis_server_command(binary, port, self.paths.root.resolve()),
            f"redis://127.0.0.1:{port}/0",
        )
        self.redis_url = self.children["redis"].url
        self.notes.append(f"cache and online features: redis-server on port {port}")

    # -- reconcile ----------------------------------------------------------------------------

    def reconcile(self) -> None:
        for child in self.children.values():
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited with code {child.process.returncode}; see {child.log}")
            if not child.healthy:
                if child.name == "redis":
                    child.healthy = self._redis_up(child)
                else:
                    child.healthy = _healthy(child.url + ("/ping" if child.name == "emulator" else "/health"))
        routes = {m: self.routes.get(m) for m in self.routes.models()}
        wanted = {(m, v.model_version) for m, r in routes.items() if r for v in r.variants} | self.routes.pending()
        for key in wanted - set(self.servers):
            self._start_server(*key)
        for key in set(self.servers) - wanted:
            self._stop(self.servers.pop(key))
        for key, server in self.servers.items():
            if server.process.poll() is not None:
                server.healthy = False
                self.notes.append(f"server for {key[0]} v{key[1]} exited ({server.process.returncode}); restarting")
                self.servers[key] = self._start_server_process(*key)
            elif not server.healthy:
                server.healthy = _healthy(server.url + "/ping")
        self._push_endpoints(routes)
        self._write_status()

    def _redis_up(self, child: _Child) -> bool:
        import socket

        port = int(child.url.rsplit(":", 1)[1].split("/")[0])
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    def _start_server(self, model: str, version: str) -> None:
        self.servers[(model, version)] = self._start_server_process(model, version)

    def _start_server_process(self, model: str, version: str) -> _Child:
        found = self.registry.get(model, version)
        folder = self.paths.deployments / model / f"v{version}"
        if not (folder / "manifest.json").exists():
            extract_archive(Path(found.artifact_uri), folder)
        port = free_port()
        return self._spawn(
            f"{model}-v{version}",
            [
                sys.executable,
                "-m",
                "sagegate",
                "serve",
                "--model-dir",
                str(folder),
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
            ],
            f"http://127.0.0.1:{port}",
        )

    def _push_endpoints(self, routes: dict[str, Any]) -> None:
        endpoints = []
        for route in routes.values():
            if route is None:
                continue
            variants = []
            for v in route.variants:
                server = self.servers.get((route.model, v.model_version))
                if server is not None and server.healthy:
                    variants.append(
                        {"name": v.name, "url": server.url, "weight": v.weight, "shadow": v.name == route.shadow}
                    )
            if variants:
                endpoints.append({"name": route.endpoint, "variants": variants})
        encoded = json.dumps(endpoints, sort_keys=True)
        emulator = self.children.get("emulator")
        if encoded == self._endpoints or emulator is None or not emulator.healthy:
            return
        current = {e["name"] for e in json.loads(self._endpoints or "[]")}
        for endpoint in endpoints:
            self._call(
                emulator.url + f"/_sagegate/endpoints/{endpoint['name']}",
                "PUT",
                json.dumps({"variants": endpoint["variants"]}).encode(),
            )
        for gone in current - {e["name"] for e in endpoints}:
            self._call(emulator.url + f"/_sagegate/endpoints/{gone}", "DELETE", None)
        self._endpoints = encoded

    @staticmethod
    def _call(url: str, method: str, body: bytes | None) -> None:
        request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5):
            pass

    def _write_status(self) -> None:
        status = {
            "pid": os.getpid(),
            "gateway_url": self.children["gateway"].url if "gateway" in self.children else None,
            "emulator_url": self.children["emulator"].url if "emulator" in self.children else None,
            "redis_url": self.redis_url,
            "processes": {
                c.name: {"pid": c.process.pid, "url": c.url, "healthy": c.healthy, "log": str(c.log)}
                for c in [*self.children.values(), *self.servers.values()]
            },
            "servers": {f"{m}:{v}": {"url": s.url, "healthy": s.healthy} for (m, v), s in self.servers.items()},
        }
        tmp = self.paths.status.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, indent=2))
        os.replace(tmp, self.paths.status)

    # -- stop ---------------------------------------------------------------------------------

    @staticmethod
    def _stop(child: _Child, timeout: float = 15.0) -> None:
        if child.process.poll() is None:
            try:
                os.killpg(child.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            try:
                child.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait()

    def stop(self) -> None:
        for server in list(self.servers.values()):
            self._stop(server)
        self.servers.clear()
        for name in ("gateway", "emulator", "redis"):
            if name in self.children:
                self._stop(self.children.pop(name))
        self.paths.status.unlink(missing_ok=True)
