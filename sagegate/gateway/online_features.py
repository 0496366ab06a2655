"""Online features: one Redis hash per entity, fetched within a small time budget or not at all."""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

import orjson

from sagegate.gateway.redis_support import Breaker, RedisClientProtocol
from sagegate.keys import feature_key

__all__ = ["FeatureLookup", "OnlineFeatureStore"]

log = logging.getLogger("sagegate.gateway")


class FeatureLookup:
    __slots__ = ("available", "values")

    def __init__(self, values: dict[str, Any], available: bool) -> None:
        self.values = values
        self.available = available  # False: the store was slow or down and defaults were used


class OnlineFeatureStore:
    """Values are stored JSON-encoded per field (`HSET sagegate:feat:user_id:u1 amount_7d 123.4`)."""

    def __init__(self, client: RedisClientProtocol | None, breaker: Breaker | None = None) -> None:
        self._client = client
        self._breaker = breaker or Breaker()

    async def fetch(self, entity: str, entity_id: str, names: Collection[str]) -> FeatureLookup:
        if self._client is None:
            return FeatureLookup({}, available=True)
        if self._breaker.open:
            return FeatureLookup({}, available=False)
        try:
            raw = await self._client.hgetall(feature_key(entity, entity_id))
        except Exception as exc:  # redis-py raises ConnectionError, TimeoutError and friends
            log.warning("online features unavailable: %s", exc or type(exc).__name__)
            self._breaker.failed()
            return FeatureLookup({}, available=False)
        self._breaker.succeeded()
        values: dict[str, Any] = {}
        for field, encoded in raw.items():
            name = field.decode() if isinstance(field, bytes) else str(field)
            if name in names:
                try:
                    values[name] = orjson.loads(encoded)
                except orjson.JSONDecodeError:
                    log.warning("feature %s of %s %s is not JSON; ignored", name, entity, entity_id)
        return FeatureLookup(values, available=True)

    async def put(self, entity: str, entity_id: str, values: dict[str, Any]) -> None:
        """Writes features (what a feature pipeline does; the demo and tests use it)."""
        if self._client is None:
            raise RuntimeError("no feature store is configured")
        mapping = {k: orjson.dumps(v) for k, v in values.items()}
        await self._client.hset(feature_key(entity, entity_id), mapping=mapping)
