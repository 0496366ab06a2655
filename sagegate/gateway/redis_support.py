"""Redis for the gateway: clients with hard time budgets, and a breaker that stops asking a dead one."""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

__all__ = ["Breaker", "InProcessRedis", "RedisClientProtocol", "redis_client"]


class RedisClientProtocol(Protocol):
    def get(self, name: str) -> Any: ...

    def set(self, name: str, value: Any, ex: Any = None, px: Any = None, nx: bool = False) -> Any: ...

    def hgetall(self, name: str) -> Any: ...

    def hset(self, name: str, key: Any = None, value: Any = None, mapping: Any = None) -> Any: ...

    def delete(self, *names: str) -> Any: ...

    def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> Any: ...


def redis_client(url: str, budget_ms: float) -> Any:
    """A redis-py client whose every call fails within about `budget_ms` when Redis is slow or gone;
    `memory://` gives the in-process stand-in of the local stack."""
    if url.startswith("memory://"):
        return _shared_memory()
    import redis

    seconds = budget_ms / 1000
    return redis.Redis.from_url(
        url, socket_timeout=seconds, socket_connect_timeout=seconds, retry_on_timeout=False, health_check_interval=30
    )


class Breaker:
    """After a failure, skip Redis for `cooldown` seconds instead of paying the budget on every request."""

    def __init__(self, cooldown: float = 1.0) -> None:
        self._cooldown = cooldown
        self._open_until = 0.0
        self._lock = threading.Lock()

    @property
    def open(self) -> bool:
        return time.monotonic() < self._open_until

    def trip(self) -> None:
        with self._lock:
            self._open_until = time.monotonic() + self._cooldown


class InProcessRedis:
    """The few Redis commands the gateway uses, in this process's memory: the local stack's cache when
    no redis-server is installed (`memory://`). One process only; nothing survives a restart."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[Any, float | None]] = {}
        self._lock = threading.Lock()

    def _live(self, name: str) -> Any:
        item = self._values.get(name)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= time.monotonic():
            del self._values[name]
            return None
        return value

    def get(self, name: str) -> Any:
        with self._lock:
            value = self._live(name)
            return value if not isinstance(value, dict) else None

    def set(self, name: str, value: Any, ex: Any = None, px: Any = None, nx: bool = False) -> Any:
        with self._lock:
            if nx and self._live(name) is not None:
                return None
            ttl = ex if ex is not None else (px / 1000 if px is not None else None)
            self._values[name] = (
                value if isinstance(value, bytes) else str(value).encode(),
                time.monotonic() + ttl if ttl is not None else None,
            )
            return True

    def hgetall(self, name: str) -> Any:
        with self._lock:
            value = self._live(name)
            return dict(value) if isinstance(value, dict) else {}

    def hset(self, name: str, key: Any = None, value: Any = None, mapping: Any = None) -> Any:
        with self._lock:
            current = self._live(name)
            fields = dict(current) if isinstance(current, dict) else {}
            fields.update({k.encode() if isinstance(k, str) else k: v for k, v in (mapping or {key: value}).items()})
            self._values[name] = (fields, None)
            return len(fields)

    def delete(self, *names: str) -> Any:
        with self._lock:
            return sum(self._values.pop(n, None) is not None for n in names)

    def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> Any:
        """Only the compare-and-delete the cache uses to release its single-flight lock."""
        key, token = keys_and_args[0], keys_and_args[numkeys]
        with self._lock:
            current = self._live(key)
            if current == (token if isinstance(token, bytes) else str(token).encode()):
                del self._values[key]
                return 1
            return 0


_MEMORY: InProcessRedis | None = None


def _shared_memory() -> InProcessRedis:
    """One in-process store per process, shared by the cache and the feature store as Redis would be."""
    global _MEMORY
    if _MEMORY is None:
        _MEMORY = InProcessRedis()
    return _MEMORY
