"""Errors raised while building a model package; each message is one readable line."""

from __future__ import annotations

__all__ = ["PackageError", "ParityError"]


class PackageError(Exception):
    """The package cannot be built; nothing was written."""


class ParityError(PackageError):
    """The ONNX model's outputs disagree with the source model's beyond the tolerance."""
