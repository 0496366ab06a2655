"""The route store: each model's current Route, with its history (for rollbacks).

SQLite locally, DynamoDB in AWS; the gateway reads it through `RegistryCatalog`, deployments (the
CLI, the local canary, the deployment workflow) write it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sagegate.registry.protocol import RegistryError
from sagegate.routing import Route, Variant

__all__ = ["DynamoRouteStore", "RouteStoreProtocol", "SqliteRouteStore", "describe_route", "next_route"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS routes (
    model TEXT NOT NULL,
    revision INTEGER NOT NULL,
    route TEXT,                 -- NULL: the model was undeployed at this revision
    reason TEXT NOT NULL,
    changed_at TEXT NOT NULL,
    PRIMARY KEY (model, revision)
);
"""


class RouteStoreProtocol(Protocol):
    def get(self, model: str) -> Route | None: ...

    def put(self, route: Route, reason: str) -> int: ...

    def delete(self, model: str, reason: str) -> None: ...

    def models(self) -> list[str]: ...

    def history(self, model: str) -> list[tuple[int, Route | None, str]]: ...


class SqliteRouteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            yield db
        finally:
            db.close()

    def _append(self, model: str, route: Route | None, reason: str) -> int:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            revision = db.execute(
                "SELECT COALESCE(MAX(revision), 0) + 1 FROM routes WHERE model = ?", (model,)
            ).fetchone()[0]
            db.execute(
                "INSERT INTO routes VALUES (?, ?, ?, ?, ?)",
                (model, revision, route.model_dump_json() if route else None, reason, datetime.now(UTC).isoformat()),
            )
            db.execute("COMMIT")
        return int(revision)

    def get(self, model: str) -> Route | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT route FROM routes WHERE model = ? ORDER BY revision DESC LIMIT 1", (model,)
            ).fetchone()
        return Route.model_validate_json(row[0]) if row and row[0] else None

    def put(self, route: Route, reason: str) -> int:
        return self._append(route.model, route, reason)

    def delete(self, model: str, reason: str) -> None:
        self._append(model, None, reason)

    def models(self) -> list[str]:
        with self._connect() as db:
            rows = db.execute("SELECT DISTINCT model FROM routes ORDER BY model").fetchall()
        return [m for (m,) in rows if self.get(m) is not None]

    def history(self, model: str) -> list[tuple[int, Route | None, str]]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT revision, route, reason FROM routes WHERE model = ? ORDER BY revision", (model,)
            ).fetchall()
        return [(int(rev), Route.model_validate_json(r) if r else None, reason) for rev, r, reason in rows]


class DynamoRouteStore:
    """The route table in AWS: one item per model (kind "route": the current route and its revision),
    beside its history items ("history#<revision>") and the deployment workflow's rollout claims
    ("rollout#<version>"). The workflow writes the current item itself (UpdateItem ... ADD revision)."""

    def __init__(self, client: Any, table: str) -> None:
        self._db, self.table = client, table

    def _key(self, model: str, kind: str = "route") -> dict[str, Any]:
        return {"model": {"S": model}, "kind": {"S": kind}}

    def _append(self, model: str, route: Route | None, reason: str) -> int:
        now = datetime.now(UTC).isoformat()
        values: dict[str, Any] = {":why": {"S": reason}, ":at": {"S": now}, ":one": {"N": "1"}}
        if route is not None:
            values[":route"] = {"S": route.model_dump_json()}
            update = "SET #route = :route, #reason = :why, changed_at = :at ADD revision :one"
        else:
            update = "SET #reason = :why, changed_at = :at REMOVE #route ADD revision :one"
        answer = self._db.update_item(
            TableName=self.table,
            Key=self._key(model),
            UpdateExpression=update,
            ExpressionAttributeNames={"#route": "route", "#reason": "reason"},
            ExpressionAttributeValues=values,
            ReturnValues="UPDATED_NEW",
        )
        revision = int(answer["Attributes"]["revision"]["N"])
        item = {**self._key(model, f"history#{revision:010d}"), "reason": {"S": reason}, "changed_at": {"S": now}}
        if route is not None:
            item["route"] = {"S": route.model_dump_json()}
        self._db.put_item(TableName=self.table, Item=item)
        return revision

    def get(self, model: str) -> Route | None:
        item = self._db.get_item(TableName=self.table, Key=self._key(model), ConsistentRead=True).get("Item")
        return Route.model_validate_json(item["route"]["S"]) if item and "route" in item else None

    def put(self, route: Route, reason: str) -> int:
        return self._append(route.model, route, reason)

    def delete(self, model: str, reason: str) -> None:
        self._append(model, None, reason)

    def models(self) -> list[str]:
        found: set[str] = set()
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "FilterExpression": "#kind = :route AND attribute_exists(#route)",
            "ExpressionAttributeNames": {"#kind": "kind", "#route": "route"},
            "ExpressionAttributeValues": {":route": {"S": "route"}},
            "ProjectionExpression": "model",
        }
        while True:
            page = self._db.scan(**kwargs)
            found.update(item["model"]["S"] for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return sorted(found)
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def history(self, model: str) -> list[tuple[int, Route | None, str]]:
        items = self._db.query(
            TableName=self.table,
            KeyConditionExpression="model = :m AND begins_with(kind, :h)",
            ExpressionAttributeValues={":m": {"S": model}, ":h": {"S": "history#"}},
            ConsistentRead=True,
        ).get("Items", [])
        return [
            (
                int(i["kind"]["S"].removeprefix("history#")),
                Route.model_validate_json(i["route"]["S"]) if "route" in i else None,
                i["reason"]["S"],
            )
            for i in items
        ]


def next_route(
    current: Route | None,
    model: str,
    version: str,
    *,
    traffic: float | None = None,
    shadow: bool = False,
    replace: bool = False,
) -> Route:
    """The route after deploying `version`: all traffic, a share of it, or a shadow copy."""
    name = f"v{version}"
    if sum((traffic is not None, shadow, replace)) > 1:
        raise RegistryError("give one of --traffic, --shadow and --replace")
    if current is None or replace:
        if shadow or (traffic is not None and traffic < 100 and current is None):
            raise RegistryError(f"model {model!r} has no live version to share traffic with: deploy it first")
        only = [Variant(name=name, model_version=version, weight=100)]
        if current is not None:  # the route's own settings (split, fallback, TTL, budget) stay
            return current.model_copy(update={"variants": only, "shadow": None})
        return Route(model=model, endpoint=f"{model}-local", variants=only)
    others = [v for v in current.variants if v.name not in (name, current.shadow)]
    if shadow:
        variants = [*others, Variant(name=name, model_version=version, weight=0)]
        return current.model_copy(update={"variants": variants, "shadow": name})
    if traffic is None:
        raise RegistryError(
            f"model {model!r} is live ({describe_route(current)}): give --traffic P, --shadow or --replace"
        )
    if not 0 < traffic <= 100:
        raise RegistryError("--traffic must be above 0 and at most 100")
    total = sum(v.weight for v in others) or 1.0
    rest = [v.model_copy(update={"weight": round(v.weight / total * (100 - traffic), 4)}) for v in others]
    variants = [*rest, Variant(name=name, model_version=version, weight=traffic)]
    return current.model_copy(update={"variants": variants, "shadow": None})


def describe_route(route: Route) -> str:
    return ", ".join(
        f"v{v.model_version} {v.weight:g}%" + (" shadow" if v.name == route.shadow else "") for v in route.variants
    )
