"""The prediction API: FastAPI app, data plane (Predictor), cache, online features, logs, metrics."""

from __future__ import annotations

from sagegate.gateway.config import GatewaySettings

__all__ = ["GatewaySettings"]
