"""Every core of an instance: N server processes, each with its own models, sharing the ports.

The parent binds the HTTP socket once and spawns the workers with it (pre-fork: the kernel hands
each connection to one accepting worker); each worker binds the gRPC port with SO_REUSEPORT. The
parent loads no model: it keeps the workers running (one that dies is started again) and stops
them all on SIGTERM, each draining its requests, or when one fails to start (its models or its
ports: the others would fail alike), exiting 1 as a single server does. A worker whose parent dies
gets SIGTERM (Linux's parent-death signal): a killed server leaves no workers behind.

What the copies cost: every worker holds every model, so each gets 1/N of the memory budget, and
ONNX Runtime's intra-op threads default to the worker's share of the CPUs. /ping (and OIP ready)
is 200 only while every worker has loaded its models and runs: each worker writes its process id
into a shared array once loaded, and a ready check looks each one up (a worker that died is not
ready from that moment, before its parent has noticed and started another).

N defaults to the CPUs the container may use (its cgroup quota and CPU affinity), as SageMaker's
own containers size their worker pools, capped by how many copies of the models the memory budget
holds (estimated from the packages' files before any is loaded). The multi-model API loads and
unloads models over HTTP in one process, so a multi-model server runs one worker.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sagegate.server.config import ServerConfig
from sagegate.server.metrics import MULTIPROCESS_DIR

__all__ = [
    "available_cpus",
    "every_worker_ready",
    "models_memory_mb",
    "resolve_workers",
    "serve_workers",
    "worker_config",
]

log = logging.getLogger("sagegate.server")

_LOAD_FAILED = 1


def available_cpus() -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def resolve_workers(config: ServerConfig) -> int:
    if config.multi_model:
        if config.workers > 1:
            log.warning(
                "the multi-model API loads models into one process: serving with 1 worker, not %d", config.workers
            )
        return 1
    if config.workers:
        return config.workers
    cpus = available_cpus()
    # One per CPU, but no more copies of the models than the memory budget holds: a large model
    # on an instance of many CPUs gets fewer workers rather than none that can load it.
    need = models_memory_mb(config.model_dir)
    fit = int(config.memory_budget_mb // need) if need else cpus
    if fit < cpus:
        log.warning(
            "%d CPUs, but the memory budget (%d MB) holds %d copies of the models (about %.0f MB each): %d workers",
            cpus,
            config.memory_budget_mb,
            fit,
            need,
            max(1, fit),
        )
    return max(1, min(cpus, fit))


def models_memory_mb(model_dir: Path) -> float:
    """What one copy of the model directory's packages takes to load, estimated from their files
    (an archive at its compressed size: a lower bound, model weights compress little)."""
    from sagegate.manifest import MANIFEST_FILE
    from sagegate.server.model import estimate_memory_mb

    if not model_dir.is_dir():
        return 0.0
    if (model_dir / MANIFEST_FILE).exists():
        return estimate_memory_mb(model_dir)
    total = 0.0
    for entry in model_dir.iterdir():
        if entry.is_dir() and (entry / MANIFEST_FILE).exists():
            total += estimate_memory_mb(entry)
        elif entry.is_file() and entry.name.endswith(".tar.gz"):
            total += 2.0 * entry.stat().st_size / (1024 * 1024) + 1.0
    return total


def worker_config(config: ServerConfig, workers: int) -> ServerConfig:
    """One worker's settings: its share of the memory budget and of the CPUs."""
    threads = config.intra_op_threads or max(1, available_cpus() // workers)
    return config.model_copy(
        update={
            "workers": 1,
            "memory_budget_mb": max(1, config.memory_budget_mb // workers),
            "intra_op_threads": threads,
        }
    )


def every_worker_ready(ready: Any) -> bool:
    """Whether every worker has loaded its models (its process id is in `ready`) and still runs."""
    return all(pid > 0 and _running(pid) for pid in ready)


def _running(pid: int) -> bool:
    """Whether the process runs: a dead one not yet reaped by its parent is a zombie (state Z or X)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: whether a signal could reach it
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _die_with(parent: int) -> None:
    """SIGTERM to this worker when its parent dies (Linux): a killed parent leaves no workers."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the line above
        raise SystemExit(0)


def _worker(config_json: str, sock: socket.socket, index: int, ready: Any, parent: int) -> None:
    from sagegate.server.main import serve_one

    _die_with(parent)

    config = ServerConfig.model_validate_json(config_json)
    code = serve_one(config, sockets=[sock], ready=ready, index=index)
    raise SystemExit(code)


def serve_workers(config: ServerConfig, workers: int) -> int:
    """Runs `workers` server processes on the config's ports until SIGTERM; the exit code."""
    with _shared_metrics():
        return _supervise(config, workers)


def _supervise(config: ServerConfig, workers: int) -> int:
    context = multiprocessing.get_context("spawn")  # never fork a process with ONNX Runtime threads
    try:
        sock = _listen(config.host, config.port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.host, config.port, exc)
        return _LOAD_FAILED
    ready = context.Array("i", workers, lock=False)  # each worker's process id once it has loaded
    share = worker_config(config, workers)
    log.info(
        "%d workers on port %d%s, each with %d MB of the %d MB memory budget and %d intra-op threads",
        workers,
        config.port,
        f" (gRPC {config.grpc_port})" if config.grpc_port else "",
        share.memory_budget_mb,
        config.memory_budget_mb,
        share.intra_op_threads,
    )
    payload = share.model_dump_json()
    stopping = False
    processes: list[Any] = []

    def start(index: int) -> Any:
        ready[index] = 0
        process = context.Process(
            target=_worker,
            args=(payload, sock, index, ready, os.getpid()),
            name=f"sagegate-worker-{index}",
            daemon=False,
        )
        process.start()
        return process

    def stop(signum: int, _: Any) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    processes.extend(start(i) for i in range(workers))
    code = 0
    try:
        while not stopping:
            # Wakes as soon as a worker exits (and at least each second, to see a stop).
            multiprocessing.connection.wait([p.sentinel for p in processes], timeout=1.0)
            for index, process in enumerate(processes):
                if stopping or process.is_alive():
                    continue
                ready[index] = 0
                _forget(process.pid)
                if process.exitcode > 0:  # it failed to start (models, ports): so would the next one
                    log.error("worker %d could not start (exit code %d): stopping", index, process.exitcode)
                    code = _LOAD_FAILED
                    stop(signal.SIGTERM, None)
                    break
                log.warning("worker %d exited with code %s: starting it again", index, process.exitcode)
                processes[index] = start(index)
        for process in processes:
            process.join(config.request_timeout_s + 30)
            if process.is_alive():
                process.kill()
                process.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    return code


@contextlib.contextmanager
def _shared_metrics() -> Iterator[None]:
    """/metrics adds up every worker's values (prometheus_client's multiprocess mode): the workers,
    spawned inside this, write them to files in a folder of their own."""
    folder = tempfile.mkdtemp(prefix="sagegate-metrics-")
    previous = os.environ.get(MULTIPROCESS_DIR)
    os.environ[MULTIPROCESS_DIR] = folder
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(MULTIPROCESS_DIR, None)
        else:
            os.environ[MULTIPROCESS_DIR] = previous
        shutil.rmtree(folder, ignore_errors=True)


def _forget(pid: int | None) -> None:
    """A dead worker's gauges no longer count (its counters and histograms still do)."""
    if pid is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
