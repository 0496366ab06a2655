"""`serve`: runs the inference server under uvicorn until SIGTERM, draining in-flight requests."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from sagegate.server.app import InferenceApp
from sagegate.server.config import ServerConfig

__all__ = ["serve", "serve_one"]


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises SIGTERM after a graceful shutdown, so the process would die of the
        # signal; a drained server should exit 0 instead.
        with super().capture_signals():
            yield
            self._captured_signals.clear()


def serve(config: ServerConfig) -> int:
    """Serves until stopped; returns the process exit code (1 when the models failed to load).
    With more than one worker (`config.workers`), in as many processes (sagegate.server.workers)."""
    from sagegate.server.workers import resolve_workers, serve_workers

    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    workers = resolve_workers(config)
    if workers > 1:
        return serve_workers(config, workers)
    return serve_one(config)


def serve_one(
    config: ServerConfig, *, sockets: list[socket.socket] | None = None, ready: Any = None, index: int = 0
) -> int:
    """One server process; a worker's gets the shared HTTP socket and the workers' ready marks."""
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = InferenceApp(config)
    if ready is not None:
        app.reuse_port = True

        from sagegate.server.workers import every_worker_ready

        def mark() -> None:
            ready[index] = os.getpid()

        app.on_ready = mark
        app.peers_ready = lambda: every_worker_ready(ready)
    server = _Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            loop="auto",
            http="auto",
            lifespan="on",
            access_log=False,
            proxy_headers=False,
            server_header=False,
            log_level=config.log_level,
            timeout_graceful_shutdown=int(config.request_timeout_s),
            timeout_keep_alive=75,  # longer than SageMaker's 60 s idle connection reuse
        )
    )

    def stop(_: str) -> None:
        server.should_exit = True

    app.on_load_failure = stop
    server.run(sockets=sockets)
    return 1 if app.load_error else 0
