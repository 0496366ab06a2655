"""The inference server that runs inside the SageMaker container (and locally)."""

from __future__ import annotations

from sagegate.server.config import ServerConfig

__all__ = ["ServerConfig"]
