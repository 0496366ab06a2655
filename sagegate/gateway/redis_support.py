"""Redis for the gateway: clients with hard time budgets, and a breaker that stops asking a dead one."""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

__all__ = ["Breaker", "RedisClientProtocol", "redis_client"]


class RedisClientProtocol(Protocol):
    def get(self, name: str) -> Any: ...

    def set(self, name: str, value: Any, ex: Any = None, px: Any = None, nx: bool = False) -> Any: ...

    def hgetall(self, name: str) -> Any: ...

    def hset(self, name: str, key: Any = None, value: Any = None, mapping: Any = None) -> Any: ...

    def delete(self, *names: str) -> Any: ...

    def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> Any: ...


def redis_client(url: str, budget_ms: float) -> Any:
    """A redis-py client whose every call fails within about `budget_ms` when Redis is slow or gone."""
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
