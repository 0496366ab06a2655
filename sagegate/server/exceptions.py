"""Errors the data plane raises; the REST layer maps each to one HTTP status."""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "MemoryBudgetExceeded",
    "MethodNotAllowed",
    "ModelAlreadyLoaded",
    "ModelLoadError",
    "ModelNotFound",
    "ModelOutputError",
    "ModelRuntimeError",
    "NotAcceptable",
    "PayloadTooLarge",
    "RouteNotFound",
    "ServerError",
    "ServiceUnavailable",
    "UnsupportedMediaType",
]


class ServerError(Exception):
    status = 500

    def __init__(self, message: str, **detail: object) -> None:
        super().__init__(message)
        self.message = message
        self.detail = {k: v for k, v in detail.items() if v is not None}


class BadRequest(ServerError):
    status = 400


class PayloadTooLarge(BadRequest):
    status = 413


class UnsupportedMediaType(BadRequest):
    status = 415


class NotAcceptable(BadRequest):
    """No type the server answers in is acceptable to the client (Accept)."""

    status = 406


class NoExplainer(BadRequest):
    """An explanation was asked of a model packaged without an explainer."""


class RouteNotFound(ServerError):
    status = 404


class MethodNotAllowed(ServerError):
    status = 405


class ServiceUnavailable(ServerError):
    status = 503


class ModelNotFound(ServerError):
    status = 404


class ModelAlreadyLoaded(ServerError):
    status = 409


class MemoryBudgetExceeded(ServerError):
    status = 507


class ModelLoadError(ServerError):
    status = 500


class ModelRuntimeError(ServerError):
    status = 500


class ModelOutputError(ModelRuntimeError):
    """The model answered NaN or infinity: a failure of the model, never a 200 with nulls."""
