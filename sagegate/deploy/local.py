"""Deployments on the local stack: change the desired state, wait for the supervisor to serve it."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable

from sagegate.deploy.routes import SqliteRouteStore, next_route
from sagegate.local.stack import StackPaths, WantedServers, read_status
from sagegate.registry import ApprovalStatus, LocalRegistry, RegistryError
from sagegate.routing import Route

__all__ = ["deploy", "next_route", "rollback", "undeploy"]


def _wait(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise RegistryError(f"{what} did not happen within {timeout:g}s; see the logs in .sagegate/logs")


def deploy(
    paths: StackPaths,
    model: str,
    version: str,
    *,
    traffic: float | None = None,
    shadow: bool = False,
    replace: bool = False,
    timeout: float = 120.0,
) -> Route:
    found = LocalRegistry(paths.registry).get(model, version)
    if found.status is not ApprovalStatus.APPROVED:
        raise RegistryError(
            f"{model} v{version} is {found.status.value}: approve it first "
            f"(sagegate models approve {model} {version} --by NAME)"
        )
    store = SqliteRouteStore(paths.routes)
    route = next_route(store.get(model), model, version, traffic=traffic, shadow=shadow, replace=replace)
    if read_status(paths) is None:
        raise RegistryError("the local stack is not running: start it with `sagegate dev`")
    wanted = WantedServers(paths.wanted)
    wanted.add(model, version)
    try:
        key = f"{model}:{version}"
        _wait(
            f"a healthy server for {key}",
            lambda: bool((read_status(paths) or {}).get("servers", {}).get(key, {}).get("healthy")),
            timeout,
        )
        store.put(
            route,
            f"deploy v{version}"
            + (f" at {traffic:g}%" if traffic is not None else "")
            + (" as shadow" if shadow else "")
            + (" replacing" if replace else ""),
        )
    finally:
        wanted.remove(model, version)
    wait_for_emulator(paths, route, timeout)
    return route


def wait_for_emulator(paths: StackPaths, route: Route, timeout: float) -> None:
    def applied() -> bool:
        status = read_status(paths)
        if status is None or not status.get("emulator_url"):
            return False
        with urllib.request.urlopen(status["emulator_url"] + "/_sagegate/endpoints", timeout=2) as response:
            endpoints = {e["name"]: e for e in json.loads(response.read())["endpoints"]}
        live = {v["name"]: v["weight"] for v in endpoints.get(route.endpoint, {}).get("variants", [])}
        return live == {v.name: v.weight for v in route.variants}

    _wait(f"the emulator taking the new weights of {route.endpoint}", applied, timeout)


def rollback(paths: StackPaths, model: str, timeout: float = 60.0) -> Route:
    """Back to the route before the current one."""
    store = SqliteRouteStore(paths.routes)
    history = store.history(model)
    current = store.get(model)
    if current is None:
        raise RegistryError(f"model {model!r} is not deployed")
    earlier = [(rev, r) for rev, r, _ in history[:-1] if r is not None and r != current]
    if not earlier:
        raise RegistryError(f"model {model!r} has no earlier deployment to roll back to")
    revision, route = earlier[-1]
    store.put(route, f"rollback to revision {revision}")
    if read_status(paths) is not None:
        wait_for_emulator(paths, route, timeout)
    return route


def undeploy(paths: StackPaths, model: str) -> None:
    store = SqliteRouteStore(paths.routes)
    if store.get(model) is None:
        raise RegistryError(f"model {model!r} is not deployed")
    store.delete(model, "undeploy")
