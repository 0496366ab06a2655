"""The prediction cache: fresh values, stale values kept for degraded answers, and single-flight.

Each value is stored with its own freshness deadline and a Redis expiry `stale_for` seconds
later: within its TTL it is a cache hit; after it, only a failing endpoint may serve it, flagged.

Single-flight: of N concurrent misses for one key, the one that wins `SET lock NX PX` calls the
endpoint; the others poll for its value for at most `wait` seconds, then call the endpoint
themselves. A leader that crashes leaves a lock that expires on its own.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from sagegate.gateway.redis_support import Breaker, RedisClientProtocol
from sagegate.keys import lock_key

__all__ = ["CacheOutcome", "Cached", "PredictionCache"]

log = logging.getLogger("sagegate.gateway")

# Delete the lock only if we still own it (it may have expired and been taken by another request).
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
_POLL_S = 0.005


@dataclass(frozen=True)
class Cached:
    value: dict[str, Any]
    fresh: bool


@dataclass(frozen=True)
class CacheOutcome:
    value: dict[str, Any]
    hit: bool  # served from the cache (including a value another request just computed)
    stale: Cached | None  # what the cache held past its TTL, for a degraded answer


class PredictionCache:
    def __init__(
        self,
        client: RedisClientProtocol | None,
        *,
        stale_for: int = 86_400,
        lock_ms: int = 2000,
        wait: float = 1.5,
        breaker: Breaker | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._stale_for = stale_for
        self._lock_ms = lock_ms
        self._wait = wait
        self._breaker = breaker or Breaker()
        self._clock = clock
        self.unavailable = 0  # operations skipped or failed because Redis was slow or down

    @property
    def enabled(self) -> bool:
        return self._client is not None

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._client is None or self._breaker.open:
            self.unavailable += self._client is not None
            return None
        try:
            return getattr(self._client, method)(*args, **kwargs)
        except Exception as exc:  # redis-py errors: serve without the cache
            log.warning("prediction cache unavailable: %s", exc)
            self._breaker.trip()
            self.unavailable += 1
            return None

    def read(self, key: str) -> Cached | None:
        raw = self._call("get", key)
        if raw is None:
            return None
        try:
            entry = orjson.loads(raw)
            return Cached(entry["value"], fresh=entry["fresh_until"] > self._clock())
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None

    def write(self, key: str, value: dict[str, Any], ttl: int) -> None:
        if ttl <= 0:
            return
        entry = orjson.dumps({"value": value, "fresh_until": self._clock() + ttl})
        self._call("set", key, entry, ex=ttl + self._stale_for)

    def get_or_compute(self, key: str, ttl: int, compute: Callable[[], dict[str, Any]]) -> CacheOutcome:
        """The fresh cached value, or `compute()` run by one request per key while the others wait."""
        first = self.read(key)
        if first is not None and first.fresh:
            return CacheOutcome(first.value, hit=True, stale=None)
        if not self.enabled or ttl <= 0:
            return CacheOutcome(compute(), hit=False, stale=first)
        token = uuid.uuid4().hex
        lock = lock_key(key)
        deadline = time.monotonic() + self._wait
        while True:
            if self._call("set", lock, token, px=self._lock_ms, nx=True):
                try:
                    # The previous leader may have written the value and released the lock between
                    # our first read and our lock: look again before calling the endpoint.
                    now = self.read(key)
                    if now is not None and now.fresh:
                        return CacheOutcome(now.value, hit=True, stale=None)
                    value = compute()
                    self.write(key, value, ttl)
                    return CacheOutcome(value, hit=False, stale=first)
                finally:
                    self._call("eval", _RELEASE, 1, lock, token)
            if self._breaker.open:  # Redis went away while we waited
                return CacheOutcome(compute(), hit=False, stale=first)
            # Someone else is computing it: wait for their value, or for their lock to go.
            while time.monotonic() < deadline:
                time.sleep(_POLL_S)
                now = self.read(key)
                if now is not None and now.fresh:
                    return CacheOutcome(now.value, hit=True, stale=None)
                if not self._call("get", lock):
                    break  # the leader failed or finished without a value: try to lead
            else:
                return CacheOutcome(compute(), hit=False, stale=first)
