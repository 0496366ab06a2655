"""Redis for the gateway: async clients with hard time budgets, the cache's two scripts, and a
breaker that stops asking a Redis that is slow or gone.

The prediction cache needs two atomic steps, each one round trip (`sagegate.gateway.cache`):
"the fresh value, or else the single-flight lock" and "write the value and release the lock".
They are Lua scripts on a real Redis and plain methods on the in-process stand-in (`memory://`,
the local stack without redis-server); both implement `CacheStoreProtocol`. A cached entry is
`<fresh-until, ms since the epoch>|<JSON>`, so a script can tell fresh from stale without
decoding JSON.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

__all__ = [
    "Breaker",
    "CacheStoreProtocol",
    "InProcessRedis",
    "RedisCacheStore",
    "RedisClientProtocol",
    "cache_store",
    "redis_client",
]

HIT, LEADER, FOLLOWER = 1, 2, 0  # what `lock_or_read` found: a fresh value, the lock, someone else's lock

_LOCK_OR_READ = """
local v = redis.call('GET', KEYS[1])
if v then
  local sep = string.find(v, '|', 1, true)
  if sep and tonumber(string.sub(v, 1, sep - 1)) > tonumber(ARGV[3]) then return {1, v} end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2, v} end
return {0, v}
"""
_WRITE_RELEASE = """
if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1
"""
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class RedisClientProtocol(Protocol):
    """What the feature store uses (redis.asyncio.Redis, or the in-process stand-in)."""

    async def hgetall(self, name: str) -> Any: ...

    async def hset(self, name: str, key: Any = None, value: Any = None, mapping: Any = None) -> Any: ...


class CacheStoreProtocol(Protocol):
    async def read(self, key: str) -> bytes | None: ...

    async def lock_or_read(
        self, key: str, lock: str, token: str, lock_ms: int, now_ms: int
    ) -> tuple[int, bytes | None]:
        """(HIT, fresh entry) | (LEADER, stale entry or None) | (FOLLOWER, stale entry or None)."""
        ...

    async def write_release(self, key: str, entry: bytes, expire_s: int, lock: str, token: str) -> None: ...

    async def release(self, lock: str, token: str) -> None: ...

    async def is_locked(self, lock: str) -> bool: ...


def redis_client(url: str, budget_ms: float) -> Any:
    """An async redis-py client whose every call fails within about `budget_ms` when Redis is slow or
    gone; `memory://` gives the in-process stand-in of the local stack."""
    if url.startswith("memory://"):
        return _shared_memory()
    import redis.asyncio

    seconds = budget_ms / 1000
    return redis.asyncio.Redis.from_url(
        url, socket_timeout=seconds, socket_connect_timeout=seconds, retry_on_timeout=False, health_check_interval=30
    )


def cache_store(client: Any) -> CacheStoreProtocol:
    """The cache's view of a client from `redis_client`."""
    return client if isinstance(client, InProcessRedis) else RedisCacheStore(client)


class RedisCacheStore:
    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock_or_read = client.register_script(_LOCK_OR_READ)
        self._write_release = client.register_script(_WRITE_RELEASE)
        self._release = client.register_script(_RELEASE)

    async def read(self, key: str) -> bytes | None:
        value: bytes | None = await self._client.get(key)
        return value

    async def lock_or_read(
        self, key: str, lock: str, token: str, lock_ms: int, now_ms: int
    ) -> tuple[int, bytes | None]:
        answer = await self._lock_or_read(keys=[key, lock], args=[token, lock_ms, now_ms])
        return int(answer[0]), (answer[1] if len(answer) > 1 else None)

    async def write_release(self, key: str, entry: bytes, expire_s: int, lock: str, token: str) -> None:
        await self._write_release(keys=[key, lock], args=[entry, expire_s, token])

    async def release(self, lock: str, token: str) -> None:
        await self._release(keys=[lock], args=[token])

    async def is_locked(self, lock: str) -> bool:
        return bool(await self._client.exists(lock))


class Breaker:
    """After `threshold` failures in a row, skip Redis for `cooldown` seconds instead of paying the
    budget on every request. One slow answer under load is not an outage: it costs that request its
    cached value, not the next thousand theirs."""

    def __init__(self, cooldown: float = 1.0, threshold: int = 3) -> None:
        self._cooldown = cooldown
        self._threshold = threshold
        self._failures = 0
        self._open_until = 0.0

    @property
    def open(self) -> bool:
        return time.monotonic() < self._open_until

    def failed(self) -> None:
        self._failures += 1
        if self._failures >= self._threshold:
            self._open_until = time.monotonic() + self._cooldown
            self._failures = 0

    def succeeded(self) -> None:
        self._failures = 0


class InProcessRedis:
    """The cache and the feature store in this process's memory: the local stack's when no
    redis-server is installed (`memory://`). One process only; nothing survives a restart. The
    event loop runs one method at a time, so each is atomic as a Redis command is."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[Any, float | None]] = {}

    def _live(self, name: str) -> Any:
        item = self._values.get(name)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= time.monotonic():
            del self._values[name]
            return None
        return value

    def _set(self, name: str, value: Any, ttl: float | None) -> None:
        self._values[name] = (value, time.monotonic() + ttl if ttl is not None else None)

    # -- the feature store ---------------------------------------------------------------------

    async def hgetall(self, name: str) -> Any:
        value = self._live(name)
        return dict(value) if isinstance(value, dict) else {}

    async def hset(self, name: str, key: Any = None, value: Any = None, mapping: Any = None) -> Any:
        current = self._live(name)
        fields = dict(current) if isinstance(current, dict) else {}
        fields.update({k.encode() if isinstance(k, str) else k: v for k, v in (mapping or {key: value}).items()})
        self._set(name, fields, None)
        return len(fields)

    # -- the cache -----------------------------------------------------------------------------

    async def read(self, key: str) -> bytes | None:
        value = self._live(key)
        return value if isinstance(value, bytes) else None

    async def lock_or_read(
        self, key: str, lock: str, token: str, lock_ms: int, now_ms: int
    ) -> tuple[int, bytes | None]:
        entry = await self.read(key)
        if entry is not None and int(entry.split(b"|", 1)[0]) > now_ms:
            return HIT, entry
        if self._live(lock) is None:
            self._set(lock, token, lock_ms / 1000)
            return LEADER, entry
        return FOLLOWER, entry

    async def write_release(self, key: str, entry: bytes, expire_s: int, lock: str, token: str) -> None:
        if expire_s > 0:
            self._set(key, entry, expire_s)
        await self.release(lock, token)

    async def release(self, lock: str, token: str) -> None:
        if self._live(lock) == token:
            del self._values[lock]

    async def is_locked(self, lock: str) -> bool:
        return self._live(lock) is not None


_MEMORY: InProcessRedis | None = None


def _shared_memory() -> InProcessRedis:
    """One in-process store per process, shared by the cache and the feature store as Redis would be."""
    global _MEMORY
    if _MEMORY is None:
        _MEMORY = InProcessRedis()
    return _MEMORY
