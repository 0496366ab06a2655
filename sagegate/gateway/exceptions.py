"""Errors of the prediction path; the HTTP layer maps each to one status and a JSON body."""

from __future__ import annotations

from typing import Any

__all__ = ["GatewayError", "ModelNotFound", "NoPrediction", "PayloadTooLarge", "Unauthorized", "UnprocessableRequest"]


class GatewayError(Exception):
    status = 500

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class Unauthorized(GatewayError):
    """No API key, or the wrong one (the local stack's optional key)."""

    status = 401


class ModelNotFound(GatewayError):
    status = 404


class UnprocessableRequest(GatewayError):
    """Features that break the manifest (every bad field is listed) or a version no variant serves."""

    status = 422


class PayloadTooLarge(GatewayError):
    status = 413


class NoPrediction(GatewayError):
    """The endpoint failed and no degraded answer (stale value, fallback, default) was possible."""

    status = 503
