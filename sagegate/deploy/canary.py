"""A canary or linear rollout on the local stack, driven by the rollout policy: at each step the new
version takes its share, bakes, and is judged by its own server's metrics (5XX rate and p99
latency over the bake); a breach puts the previous route back and says why."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from sagegate.deploy.local import deploy, next_route, wait_for_emulator
from sagegate.deploy.policy import RolloutPolicy
from sagegate.deploy.routes import SqliteRouteStore
from sagegate.local.stack import StackPaths, read_status
from sagegate.registry import RegistryError
from sagegate.routing import Route

__all__ = ["RolloutFailed", "ServerWindow", "rollout"]


class RolloutFailed(RegistryError):
    """The new version breached the policy's thresholds; the previous route is back."""


@dataclass(frozen=True)
class ServerWindow:
    """Counters of a server's /metrics at one moment: requests, 5XX answers, latency histogram."""

    requests: float
    errors: float
    buckets: tuple[tuple[float, float], ...]  # (upper bound in seconds, cumulative count)

    @classmethod
    def read(cls, url: str) -> ServerWindow:
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
            text = response.read().decode()
        requests = errors = 0.0
        buckets: dict[float, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "sagegate_requests_total":
                    requests += sample.value
                    errors += sample.value if sample.labels.get("code", "").startswith("5") else 0.0
                elif sample.name == "sagegate_request_duration_seconds_bucket":
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
        return cls(requests, errors, tuple(sorted(buckets.items())))

    def since(self, start: ServerWindow) -> tuple[float, float, float | None]:
        """(requests, error rate, p99 ms) between `start` and this reading."""
        requests = self.requests - start.requests
        if requests <= 0:
            return 0.0, 0.0, None
        before = dict(start.buckets)
        deltas = [(bound, count - before.get(bound, 0.0)) for bound, count in self.buckets]
        total = deltas[-1][1] if deltas else 0.0
        p99 = next((bound for bound, count in deltas if total and count >= 0.99 * total), None)
        return requests, (self.errors - start.errors) / requests, None if p99 is None else p99 * 1000


def _server_url(paths: StackPaths, model: str, version: str) -> str:
    status = read_status(paths) or {}
    server = status.get("servers", {}).get(f"{model}:{version}")
    if not server:
        raise RegistryError(f"no server for {model} v{version} in the local stack")
    return str(server["url"])


def _bake(url: str, policy: RolloutPolicy, sleep: Callable[[float], None]) -> str | None:
    """Watches the new server for the bake time; the reason for a rollback, or None."""
    start = ServerWindow.read(url)
    deadline = time.monotonic() + policy.bake_seconds
    alarms = policy.alarms
    while True:
        sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        requests, error_rate, p99 = ServerWindow.read(url).since(start)
        if requests >= max(alarms.min_requests, 1):
            if error_rate > alarms.max_error_rate:
                return f"5XX rate {error_rate:.1%} > {alarms.max_error_rate:.1%} over {requests:.0f} requests"
            if p99 is not None and p99 > alarms.max_p99_latency_ms:
                return f"p99 latency {p99:g} ms > {alarms.max_p99_latency_ms:g} ms over {requests:.0f} requests"
        if time.monotonic() >= deadline:
            return None


def rollout(
    paths: StackPaths,
    model: str,
    version: str,
    policy: RolloutPolicy,
    *,
    on_step: Callable[[str], None] = lambda _: None,
    sleep: Callable[[float], None] = time.sleep,
) -> Route:
    store = SqliteRouteStore(paths.routes)
    previous = store.get(model)
    if previous is None:
        raise RegistryError(f"model {model!r} has no live version to roll out against: deploy it first")
    route = previous
    for share in policy.steps:
        if share >= 100:
            route = (
                deploy(paths, model, version, replace=True)
                if route is previous
                else _shift(paths, store, route, version, 100)
            )
        elif route is previous:
            route = deploy(paths, model, version, traffic=share)
        else:
            route = _shift(paths, store, route, version, share)
        on_step(f"v{version} at {share:g}%: baking {policy.bake_seconds} s")
        reason = _bake(_server_url(paths, model, version), policy, sleep)
        if reason is not None:
            store.put(previous, f"rollback of v{version} at {share:g}%: {reason}")
            wait_for_emulator(paths, previous, 60)
            raise RolloutFailed(f"v{version} rolled back at {share:g}%: {reason}")
    return route


def _shift(paths: StackPaths, store: SqliteRouteStore, route: Route, version: str, share: float) -> Route:
    if share < 100:
        nxt = next_route(route, route.model, version, traffic=share)
    else:
        nxt = next_route(route, route.model, version, replace=True)
    store.put(nxt, f"rollout v{version} to {share:g}%")
    wait_for_emulator(paths, nxt, 60)
    return nxt
