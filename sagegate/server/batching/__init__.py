"""Dynamic batching of inference requests."""

from sagegate.server.batching.adaptive import AdaptiveBatcher, BatchObserver

__all__ = ["AdaptiveBatcher", "BatchObserver"]
