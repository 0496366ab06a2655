"""The prediction cache: fresh values, stale values kept for degraded answers, and single-flight.

Each value is stored with its own freshness deadline and a Redis expiry `stale_for` seconds
later: within its TTL it is a cache hit; after it, only a failing endpoint may serve it, flagged.

One round trip answers a hit, and the same one takes the single-flight lock on a miss (a script:
`redis_support`). Of N concurrent misses for one key, the one that gets the lock calls the
endpoint and writes the value while releasing the lock (one more round trip); the others poll for
its value for at most `wait` seconds (and never past the request's own budget), then call the
endpoint themselves. A leader that crashes leaves a lock that expires on its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from sagegate.gateway.redis_support import HIT, LEADER, Breaker, CacheStoreProtocol
from sagegate.keys import lock_key

__all__ = ["CacheOutcome", "Cached", "PredictionCache"]

log = logging.getLogger("sagegate.gateway")

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
        store: CacheStoreProtocol | None,
        *,
        stale_for: int = 86_400,
        lock_ms: int = 2000,
        wait: float = 1.5,
        breaker: Breaker | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._stale_for = stale_for
        self._lock_ms = lock_ms
        self._wait = wait
        self._breaker = breaker or Breaker()
        self._clock = clock
        self.unavailable = 0  # operations skipped or failed because Redis was slow or down

    @property
    def enabled(self) -> bool:
        return self._store is not None

    async def _call(self, method: str, *args: Any) -> Any:
        if self._store is None or self._breaker.open:
            self.unavailable += self._store is not None
            return None
        try:
            answer = await getattr(self._store, method)(*args)
        except Exception as exc:  # redis-py errors, timeouts included: serve without the cache
            log.warning("prediction cache unavailable: %s", exc or type(exc).__name__)
            self._breaker.failed()
            self.unavailable += 1
            return None
        self._breaker.succeeded()
        return answer

    def _decode(self, raw: bytes | None) -> Cached | None:
        if raw is None:
            return None
        try:
            fresh_until, _, value = raw.partition(b"|")
            return Cached(orjson.loads(value), fresh=int(fresh_until) > self._clock() * 1000)
        except (orjson.JSONDecodeError, ValueError, TypeError):
            return None

    def _entry(self, value: dict[str, Any], ttl: int) -> bytes:
        return b"%d|%s" % (int((self._clock() + ttl) * 1000), orjson.dumps(value))

    async def read(self, key: str) -> Cached | None:
        return self._decode(await self._call("read", key))

    async def write(self, key: str, value: dict[str, Any], ttl: int) -> None:
        if ttl > 0:
            await self._call("write_release", key, self._entry(value, ttl), ttl + self._stale_for, lock_key(key), "")

    async def get_or_compute(
        self,
        key: str,
        ttl: int,
        compute: Callable[[], Awaitable[dict[str, Any]]],
        *,
        wait: float | None = None,
    ) -> CacheOutcome:
        """The fresh cached value, or `compute()` run by one request per key while the others wait
        (at most `wait` seconds, or the cache's own limit, whichever is shorter)."""
        if not self.enabled or ttl <= 0:
            return CacheOutcome(await compute(), hit=False, stale=None)
        token = uuid.uuid4().hex
        lock = lock_key(key)
        deadline = time.monotonic() + (self._wait if wait is None else min(self._wait, wait))
        stale: Cached | None = None
        while True:
            found = await self._call("lock_or_read", key, lock, token, self._lock_ms, int(self._clock() * 1000))
            if found is None:  # Redis is slow or gone: answer without it
                return CacheOutcome(await compute(), hit=False, stale=stale)
            state, raw = found
            cached = self._decode(raw)
            if state == HIT and cached is not None:
                return CacheOutcome(cached.value, hit=True, stale=None)
            stale = stale or cached
            if state == LEADER:
                try:
                    value = await compute()
                except BaseException:
                    await self._call("release", lock, token)
                    raise
                await self._call("write_release", key, self._entry(value, ttl), ttl + self._stale_for, lock, token)
                return CacheOutcome(value, hit=False, stale=stale)
            # Someone else is computing it: wait for their value, or for their lock to go.
            while True:
                if time.monotonic() >= deadline:
                    return CacheOutcome(await compute(), hit=False, stale=stale)
                await asyncio.sleep(_POLL_S)
                now = await self.read(key)
                if now is not None and now.fresh:
                    return CacheOutcome(now.value, hit=True, stale=None)
                if self._breaker.open:
                    return CacheOutcome(await compute(), hit=False, stale=stale)
                if not await self._call("is_locked", lock):
                    break  # the leader failed or finished without a value: try to lead
