"""Where the gateway learns each model's manifests and route, with an in-process TTL cache.

The registry (SageMaker Model Registry in AWS, SQLite locally) and the route store implement
`CatalogProtocol`; the gateway asks it at most once per TTL per key, so a warm Lambda answers
from memory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson

from sagegate.manifest import ModelManifest
from sagegate.routing import Route

__all__ = ["CachedCatalog", "CatalogProtocol", "DirectoryCatalog", "InMemoryCatalog", "RegistryCatalog"]

T = TypeVar("T")


class CatalogProtocol(Protocol):
    def models(self) -> list[str]: ...

    def route(self, model: str) -> Route | None: ...

    def manifest(self, model: str, version: str) -> ModelManifest | None: ...

    def versions(self, model: str) -> list[str]: ...

    def latest_approved(self, model: str) -> str | None:
        """The version a batch job runs when none is named (sagegate.registry.chosen_version)."""
        ...


class InMemoryCatalog:
    """Manifests and routes held in memory: tests, and a local stack built from package folders."""

    def __init__(self, manifests: Iterable[ModelManifest] = (), routes: Iterable[Route] = ()) -> None:
        self._manifests = {(m.name, m.version): m for m in manifests}
        self._routes = {r.model: r for r in routes}

    def add(self, item: ModelManifest | Route) -> None:
        if isinstance(item, Route):
            self._routes[item.model] = item
        else:
            self._manifests[(item.name, item.version)] = item

    def models(self) -> list[str]:
        return sorted({name for name, _ in self._manifests} | set(self._routes))

    def route(self, model: str) -> Route | None:
        return self._routes.get(model)

    def manifest(self, model: str, version: str) -> ModelManifest | None:
        return self._manifests.get((model, version))

    def versions(self, model: str) -> list[str]:
        return sorted((v for name, v in self._manifests if name == model), key=_version_key)

    def latest_approved(self, model: str) -> str | None:
        """Manifests held in memory have no approval: each counts as approved."""
        versions = self.versions(model)
        return versions[-1] if versions else None


def _version_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)


class CachedCatalog:
    """Remembers answers (misses too) for `ttl` seconds."""

    def __init__(self, source: CatalogProtocol, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._source = source
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[tuple[Any, ...], tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def _get(self, key: tuple[Any, ...], load: Callable[[], T]) -> T:
        now = self._clock()
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]  # type: ignore[no-any-return]
        value = load()
        with self._lock:
            self._entries[key] = (now + self._ttl, value)
        return value

    def models(self) -> list[str]:
        return self._get(("models",), self._source.models)

    def route(self, model: str) -> Route | None:
        return self._get(("route", model), lambda: self._source.route(model))

    def manifest(self, model: str, version: str) -> ModelManifest | None:
        return self._get(("manifest", model, version), lambda: self._source.manifest(model, version))

    def versions(self, model: str) -> list[str]:
        return self._get(("versions", model), lambda: self._source.versions(model))

    def latest_approved(self, model: str) -> str | None:
        return self._get(("approved", model), lambda: self._source.latest_approved(model))


class DirectoryCatalog(InMemoryCatalog):
    """Package folders (each with manifest.json) and a routes.json, read once: the local stack's
    catalog until the registry holds them, and a snapshot a Lambda can carry."""

    def __init__(self, root: Path) -> None:
        manifests = [ModelManifest.read(p.parent) for p in sorted(root.glob("*/manifest.json"))]
        routes_file = root / "routes.json"
        routes = (
            [Route.model_validate(r) for r in orjson.loads(routes_file.read_bytes())] if routes_file.exists() else []
        )
        super().__init__(manifests, routes)


class RegistryCatalog:
    """The catalog over a registry (manifests) and a route store (routes): what the local stack and
    an AWS deployment use."""

    def __init__(self, registry: Any, routes: Any) -> None:
        self._registry = registry
        self._routes = routes

    def models(self) -> list[str]:
        return sorted(set(self._registry.models()) | set(self._routes.models()))

    def route(self, model: str) -> Route | None:
        route: Route | None = self._routes.get(model)
        return route

    def manifest(self, model: str, version: str) -> ModelManifest | None:
        from sagegate.registry import VersionNotFound

        try:
            manifest: ModelManifest = self._registry.get(model, version).manifest
        except VersionNotFound:
            return None
        return manifest

    def versions(self, model: str) -> list[str]:
        return [v.version for v in self._registry.versions(model)]

    def latest_approved(self, model: str) -> str | None:
        from sagegate.registry import chosen_version

        found = chosen_version(self._registry.versions(model))
        return found.version if found is not None else None
