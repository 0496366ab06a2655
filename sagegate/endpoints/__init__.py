"""Calling model endpoints: the EndpointClient protocol and its SageMaker runtime implementation."""

from __future__ import annotations

from sagegate.endpoints.protocol import (
    EndpointClientProtocol,
    EndpointError,
    EndpointRejected,
    EndpointResponse,
    EndpointUnavailable,
)

__all__ = [
    "EndpointClientProtocol",
    "EndpointError",
    "EndpointRejected",
    "EndpointResponse",
    "EndpointUnavailable",
]
