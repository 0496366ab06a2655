"""What the gateway needs from a model endpoint, whoever provides it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "EndpointClientProtocol",
    "EndpointError",
    "EndpointRejected",
    "EndpointResponse",
    "EndpointUnavailable",
]


@dataclass(frozen=True)
class EndpointResponse:
    body: bytes
    content_type: str
    invoked_variant: str | None = None
    custom_attributes: str | None = None


class EndpointError(Exception):
    """The endpoint gave no prediction."""


class EndpointUnavailable(EndpointError):
    """Timeouts, throttling, 5xx, a model that crashed: worth a degraded answer."""


class EndpointRejected(EndpointError):
    """The model refused the input itself (its server answered 4xx): the caller's to fix."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class EndpointClientProtocol(Protocol):
    async def invoke(
        self,
        endpoint: str,
        body: bytes,
        *,
        content_type: str = "application/json",
        accept: str = "application/json",
        target_variant: str | None = None,
        inference_id: str | None = None,
        custom_attributes: str | None = None,
        timeout: float = 1.0,
        attempts: int = 2,
    ) -> EndpointResponse:
        """The answer within `timeout` seconds, all of at most `attempts` attempts together."""
        ...
