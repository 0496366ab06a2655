"""`sagegate dev`: the whole product on one machine, and the supervisor that owns every process.

The desired state lives in SQLite (the registry, the route store) and in the supervisor's own list
of servers wanted before a route names them (`WantedServers`); the supervisor reconciles the
processes with it twice a second: one `sagegate serve` per deployed (model, version), the runtime
emulator's endpoints and weights, the gateway, redis-server. `sagegate deploy` only writes desired
state and waits for the supervisor to report the new server healthy, so every process has one
owner and Ctrl-C leaves none behind. Restarting `sagegate dev` brings the same deployments back.

Supervision: every child is probed on every pass, not only until it first answers (an HTTP 200,
or a PING for Redis, within a second). A child that exits is started again after a backoff that
doubles with each failure in a row (0.5 s up to 30 s; it resets once the child has been healthy
for a while); a child that was healthy and has not answered a probe for `unhealthy_after` seconds
(hung, stopped) is killed and replaced. Each keeps its port across restarts, so nothing that points
at it has to change. The supervisor itself never exits because a child did.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sqlite3
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sagegate.deploy.routes import SqliteRouteStore
from sagegate.local.process import Child, ChildSpec, free_port, redis_server_command, serve_command
from sagegate.packaging.archive import extract_archive
from sagegate.registry import LocalRegistry

__all__ = ["DevStack", "StackPaths", "WantedServers", "read_status", "reap_orphans"]

log = logging.getLogger("sagegate.dev")

_BACKOFF_FIRST_S, _BACKOFF_MAX_S = 0.5, 30.0
_STABLE_AFTER_S = 30.0  # healthy this long: the next failure starts the backoff over
_PROBE_TIMEOUT_S = 1.0


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
    def wanted(self) -> Path:
        return self.root / "wanted.sqlite3"

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

    @property
    def endpoints(self) -> Path:
        return self.root / "endpoints.json"

    @property
    def data(self) -> Path:
        """Where local batch jobs may read and write."""
        return self.root / "data"


class WantedServers:
    """(model, version) pairs a deployment asks the supervisor to serve before any route names
    them (a deployment's first step): the supervisor's own state, beside the route store."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS wanted (model TEXT NOT NULL, version TEXT NOT NULL, "
                "PRIMARY KEY (model, version))"
            )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            yield db
        finally:
            db.close()

    def add(self, model: str, version: str) -> None:
        with self._connect() as db:
            db.execute("INSERT OR IGNORE INTO wanted VALUES (?, ?)", (model, version))

    def remove(self, model: str, version: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM wanted WHERE model = ? AND version = ?", (model, version))

    def all(self) -> set[tuple[str, str]]:
        with self._connect() as db:
            return {(m, v) for m, v in db.execute("SELECT model, version FROM wanted")}


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
        pid = int(process.get("pid") or 0)
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


class Supervised:
    """A child and what the supervisor knows of it: healthy, restarts, when to start it again."""

    def __init__(self, spec: ChildSpec) -> None:
        self.child = Child(spec)
        self.grpc = ""  # a model server's OIP v2 gRPC address (host:port)
        self.healthy = False
        self.ever_healthy = False
        self.restarts = 0
        self.failures_in_a_row = 0
        self.last_ok = 0.0
        self.healthy_since = 0.0
        self.next_start: float | None = None  # waiting out a backoff until then
        self.state = "starting"

    @property
    def name(self) -> str:
        return self.child.name

    @property
    def url(self) -> str:
        return self.child.url

    def start(self) -> None:
        self.child.start()
        self.healthy, self.next_start, self.state = False, None, "starting"

    def failed(self, now: float, why: str) -> str:
        """Marks it down (the process already gone or killed) and schedules its restart."""
        self.healthy = False
        if now - self.healthy_since < _STABLE_AFTER_S or not self.healthy_since:
            self.failures_in_a_row += 1
        else:
            self.failures_in_a_row = 1
        delay = min(_BACKOFF_MAX_S, _BACKOFF_FIRST_S * 2 ** (self.failures_in_a_row - 1))
        self.next_start = now + delay
        self.state = f"{why}; restarting in {delay:g}s"
        return f"{self.name}: {why}; restarting in {delay:g}s"

    def as_status(self) -> dict[str, Any]:
        return {
            "pid": self.child.pid,
            "url": self.url,
            "healthy": self.healthy,
            "state": self.state,
            "restarts": self.restarts,
            "log": str(self.child.spec.log),
            **({"grpc": self.grpc} if self.grpc else {}),
        }


class DevStack:
    def __init__(
        self,
        paths: StackPaths,
        *,
        gateway_port: int = 8000,
        emulator_port: int = 8001,
        redis_url: str | None = None,
        redis_port: int | None = None,
        api_key: str | None = None,
        server_ports: int | None = None,
        unhealthy_after: float = 3.0,
    ) -> None:
        self.paths = paths
        self.gateway_port = gateway_port
        self.emulator_port = emulator_port
        self.redis_url = redis_url
        self.redis_port = redis_port
        self.api_key = api_key
        self.unhealthy_after = unhealthy_after
        self.children: dict[str, Supervised] = {}
        self.servers: dict[tuple[str, str], Supervised] = {}
        self.notes: list[str] = []
        self.events: list[str] = []  # restarts and replacements, as they happen (also in logs/dev.log)
        self._events_seen = 0
        self.server_ports = server_ports  # model servers on this port and up (default: free ones)
        self._ports: dict[tuple[str, str], int] = {}  # a server keeps its port across restarts
        self._grpc_ports: dict[tuple[str, str], int] = {}  # and its OIP gRPC port
        self._endpoints: str = ""
        self._probes = ThreadPoolExecutor(max_workers=8, thread_name_prefix="probe")
        self._stopping: list[threading.Thread] = []
        paths.logs.mkdir(parents=True, exist_ok=True)
        paths.data.mkdir(parents=True, exist_ok=True)
        self.registry = LocalRegistry(paths.registry)
        self.routes = SqliteRouteStore(paths.routes)
        self.wanted = WantedServers(paths.wanted)
        self._event_log = paths.logs / "dev.log"

    def _spec(self, name: str, command: list[str], health: str, url: str, **extra: Any) -> ChildSpec:
        return ChildSpec(
            name=name,
            command=command,
            health=health,
            url=url,
            log=self.paths.logs / f"{name}.log",
            unhealthy_after=self.unhealthy_after,
            **extra,
        )

    # -- start --------------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        self._start_redis()
        if not self.paths.endpoints.exists():
            self.paths.endpoints.write_text("[]")
        emulator = f"http://127.0.0.1:{self.emulator_port}"
        self._add(
            self._spec(
                "emulator",
                [
                    sys.executable,
                    "-m",
                    "sagegate.local.emulator",
                    "--port",
                    str(self.emulator_port),
                    "--config",
                    str(self.paths.endpoints.resolve()),
                ],
                f"{emulator}/ping",
                emulator,
            )
        )
        gateway = f"http://127.0.0.1:{self.gateway_port}"
        self._add(
            self._spec(
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
                    "--no-access-log",
                ],
                f"{gateway}/health",
                gateway,
                env=self._gateway_env(emulator),
            )
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.reconcile()
            if all(c.healthy for c in self.children.values()):
                return
            failed = [c for c in self.children.values() if c.restarts]
            if failed:  # at start, a child that cannot start is an error to show, not to retry forever
                self.stop()
                raise RuntimeError(
                    f"{failed[0].name} did not start ({failed[0].state}); see {failed[0].child.spec.log}"
                )
            time.sleep(0.2)
        unhealthy = [c.name for c in self.children.values() if not c.healthy]
        self.stop()
        raise RuntimeError(f"{', '.join(unhealthy)} did not become healthy; see {self.paths.logs}")

    def _gateway_env(self, emulator: str) -> dict[str, str]:
        env = {
            "SAGEGATE_GATEWAY_STATE_DIR": str(self.paths.root.resolve()),
            "SAGEGATE_GATEWAY_ENDPOINT_URL": emulator,
            "SAGEGATE_GATEWAY_REGION": "local",
            "SAGEGATE_GATEWAY_CATALOG_TTL_S": "0.5",
            "SAGEGATE_GATEWAY_PREDICTION_LOG_PATH": str(self.paths.predictions.resolve()),
            # A long-running server: the prediction log is written in batches, not after each request.
            "SAGEGATE_GATEWAY_FLUSH_EVERY_S": "0.2",
            # The emulator checks no signatures; in AWS every endpoint call is signed.
            "SAGEGATE_GATEWAY_SIGN_REQUESTS": "false",
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "local"),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "local"),
        }
        if self.redis_url:
            env["SAGEGATE_GATEWAY_REDIS_URL"] = self.redis_url
        if self.api_key:
            env["SAGEGATE_GATEWAY_API_KEY"] = self.api_key
        return env

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
        port = self.redis_port or free_port()
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        self._add(
            self._spec(
                "redis",
                redis_server_command(binary, port, self.paths.root.resolve()),
                f"redis://127.0.0.1:{port}",
                self.redis_url,
            )
        )
        self.notes.append(f"cache and online features: redis-server on port {port}")

    def _add(self, spec: ChildSpec) -> Supervised:
        supervised = Supervised(spec)
        self.children[spec.name] = supervised
        supervised.start()
        return supervised

    # -- reconcile ----------------------------------------------------------------------------

    def reconcile(self) -> None:
        """One pass: probe everything, restart or replace what failed, serve what is wanted."""
        everything = [*self.children.values(), *self.servers.values()]
        running = [s for s in everything if s.child.running()]
        answers = dict(zip(running, self._probes.map(lambda s: s.child.probe(_PROBE_TIMEOUT_S), running), strict=True))
        now = time.monotonic()
        for supervised in everything:
            self._check(supervised, answers.get(supervised, False), now)
        try:
            self._serve_wanted()
        except sqlite3.Error as exc:  # a deployment writing at this moment: the next pass sees it
            log.warning("reading the desired state: %s", exc)
        self._write_status()

    def _check(self, s: Supervised, answered: bool, now: float) -> None:
        spec = s.child.spec
        if s.next_start is not None:
            if now >= s.next_start:
                s.restarts += 1
                self._event(f"{s.name}: starting again (restart {s.restarts})")
                s.start()
            return
        code = s.child.exit_code()
        if code is not None:
            self._event(s.failed(now, f"exited with code {code}"))
            if s.name == "emulator":
                self._endpoints = ""  # its endpoints are pushed again once it is back
            return
        if answered:
            if not s.healthy:
                s.healthy, s.ever_healthy, s.healthy_since, s.state = True, True, now, "healthy"
                if s.restarts:
                    self._event(f"{s.name}: healthy again")
            s.last_ok = now
            return
        if s.healthy and now - s.last_ok > spec.unhealthy_after:
            s.child.kill()
            self._event(s.failed(now, f"no answer to its health probe for {now - s.last_ok:.1f}s: killed"))
            return
        if not s.healthy and now - s.child.started_at > spec.start_timeout:
            s.child.kill()
            self._event(s.failed(now, f"not healthy {spec.start_timeout:g}s after its start: killed"))

    def new_events(self) -> list[str]:
        """The events since the last call."""
        fresh = self.events[self._events_seen :]
        self._events_seen = len(self.events)
        return fresh

    def _event(self, text: str) -> None:
        stamped = f"{time.strftime('%H:%M:%S')} {text}"
        self.events.append(stamped)
        log.warning(text)
        with contextlib.suppress(OSError), self._event_log.open("a") as fh:
            fh.write(stamped + "\n")

    def _serve_wanted(self) -> None:
        routes = {m: self.routes.get(m) for m in self.routes.models()}
        wanted = {(m, v.model_version) for m, r in routes.items() if r for v in r.variants} | self.wanted.all()
        for key in wanted - set(self.servers):
            self.servers[key] = self._server(*key)
        for key in set(self.servers) - wanted:
            self._stop_later(self.servers.pop(key))
        self._push_endpoints(routes)

    def _server(self, model: str, version: str) -> Supervised:
        found = self.registry.get(model, version)
        folder = self.paths.deployments / model / f"v{version}"
        if not (folder / "manifest.json").exists():
            extract_archive(Path(found.artifact_uri), folder)
        port = self._ports.get((model, version)) or self._port()
        self._ports[(model, version)] = port
        grpc_port = self._grpc_ports.setdefault((model, version), free_port())
        url = f"http://127.0.0.1:{port}"
        spec = self._spec(
            f"{model}-v{version}",
            # OIP v2: REST on the server's port (/v2), gRPC on its own.
            serve_command(folder, port, ("--grpc-port", str(grpc_port))),
            f"{url}/ping",
            url,
            # Many processes share this machine: ONNX Runtime's threads sleep between runs, and each
            # server is one process (not one per core).
            env={"SAGEGATE_SPINNING": "false", "SAGEGATE_WORKERS": "1"},
        )
        supervised = Supervised(spec)
        supervised.grpc = f"127.0.0.1:{grpc_port}"
        supervised.start()
        return supervised

    def _port(self) -> int:
        if self.server_ports is None:
            return free_port()
        taken = set(self._ports.values())
        port = self.server_ports
        while port in taken:
            port += 1
        return port

    def _push_endpoints(self, routes: dict[str, Any]) -> None:
        """The emulator's endpoints: every route's variants whose server has been healthy once (a
        variant that is down since stays listed: its calls fail fast and the gateway degrades)."""
        endpoints = []
        for route in routes.values():
            if route is None:
                continue
            variants = []
            for v in route.variants:
                server = self.servers.get((route.model, v.model_version))
                if server is not None and server.ever_healthy:
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
        try:
            for endpoint in endpoints:
                self._call(
                    emulator.url + f"/_sagegate/endpoints/{endpoint['name']}",
                    "PUT",
                    json.dumps({"variants": endpoint["variants"]}).encode(),
                )
            for gone in current - {e["name"] for e in endpoints}:
                self._call(emulator.url + f"/_sagegate/endpoints/{gone}", "DELETE", None)
        except OSError as exc:  # the emulator went away meanwhile: the next pass pushes again
            log.warning("pushing endpoints to the emulator: %s", exc)
            return
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
            "processes": {s.name: s.as_status() for s in [*self.children.values(), *self.servers.values()]},
            "servers": {
                f"{m}:{v}": {"url": s.url, "grpc": s.grpc, "healthy": s.healthy} for (m, v), s in self.servers.items()
            },
            "events": self.events[-10:],
        }
        tmp = self.paths.status.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, indent=2))
        os.replace(tmp, self.paths.status)

    # -- stop ---------------------------------------------------------------------------------

    def _stop_later(self, server: Supervised) -> None:
        """A server no route needs: drained and stopped on a thread, the supervisor goes on."""
        thread = threading.Thread(target=server.child.stop, name=f"stop {server.name}", daemon=True)
        thread.start()
        self._stopping.append(thread)

    def stop(self) -> None:
        stoppers = [
            threading.Thread(target=s.child.stop, daemon=True)
            for s in [*self.servers.values(), *self.children.values()]
        ]
        for thread in [*stoppers]:
            thread.start()
        for thread in [*stoppers, *self._stopping]:
            thread.join(30)
        self.servers.clear()
        self.children.clear()
        self._probes.shutdown(wait=False)
        self.paths.status.unlink(missing_ok=True)
