"""`serve`: runs the inference server under uvicorn until SIGTERM, draining in-flight requests."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import uvicorn

from sagegate.server.app import InferenceApp
from sagegate.server.config import ServerConfig

__all__ = ["serve"]


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises SIGTERM after a graceful shutdown, so the process would die of the
        # signal; a drained server should exit 0 instead.
        with super().capture_signals():
            yield
            self._captured_signals.clear()


def serve(config: ServerConfig) -> int:
    """Serves until stopped; returns the process exit code (1 when the models failed to load)."""
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = InferenceApp(config)
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
    server.run()
    return 1 if app.load_error else 0
