from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from sagegate.deploy.routes import DynamoRouteStore, SqliteRouteStore
from sagegate.gateway.catalog import RegistryCatalog
from sagegate.packaging import BuiltPackage
from sagegate.registry import LocalRegistry
from sagegate.routing import Route
from tests.route_tables import create_route_table


def route(*weights: int) -> Route:
    return Route.model_validate(
        {
            "model": "fraud",
            "endpoint": "fraud-local",
            "variants": [
                {"name": f"v{i + 1}", "model_version": str(i + 1), "weight": w} for i, w in enumerate(weights)
            ],
        }
    )


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        yield SqliteRouteStore(tmp_path / "routes.sqlite3")
        return
    with mock_aws():
        client = boto3.client("dynamodb", region_name="eu-west-1")
        create_route_table(client, "routes")
        yield DynamoRouteStore(client, "routes")


def test_routes_keep_their_history(store: Any) -> None:
    assert store.get("fraud") is None
    assert store.put(route(100), "deploy v1") == 1
    assert store.put(route(80, 20), "a/b v2") == 2
    assert store.get("fraud") == route(80, 20)
    store.delete("fraud", "undeploy")
    assert store.get("fraud") is None and store.models() == []
    assert [(rev, r is not None, why) for rev, r, why in store.history("fraud")] == [
        (1, True, "deploy v1"),
        (2, True, "a/b v2"),
        (3, False, "undeploy"),
    ]


def test_the_gateway_catalog_reads_registry_and_routes(tmp_path: Path, fraud_logreg: BuiltPackage) -> None:
    registry, store = LocalRegistry(tmp_path / "registry"), SqliteRouteStore(tmp_path / "routes.sqlite3")
    registry.register(fraud_logreg.path)
    store.put(route(100), "deploy v1")
    catalog = RegistryCatalog(registry, store)
    assert catalog.models() == ["fraud"] and catalog.versions("fraud") == ["1"]
    manifest = catalog.manifest("fraud", "1")
    assert manifest is not None and manifest.sha256 == fraud_logreg.manifest.sha256
    assert catalog.manifest("fraud", "2") is None
    assert catalog.route("fraud") == route(100)


def test_wanted_servers_are_kept_until_released(tmp_path: Path) -> None:
    from sagegate.local.stack import WantedServers

    wanted = WantedServers(tmp_path / "wanted.sqlite3")
    wanted.add("fraud", "2")
    wanted.add("fraud", "2")
    assert wanted.all() == {("fraud", "2")}
    wanted.remove("fraud", "2")
    assert wanted.all() == set()


def test_the_gateway_reads_routes_from_the_route_table_in_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    from sagegate.gateway import app as gateway_app

    with mock_aws():
        client = boto3.client("dynamodb", region_name="eu-west-1")
        create_route_table(client, "sagegate-dev-routes")
        DynamoRouteStore(client, "sagegate-dev-routes").put(route(70, 30), "a/b")
        monkeypatch.setenv("SAGEGATE_ROUTE_TABLE", "sagegate-dev-routes")
        monkeypatch.setenv("AWS_REGION", "eu-west-1")
        gateway_app.get_settings.cache_clear()
        gateway_app.get_catalog.cache_clear()
        try:
            catalog = gateway_app.get_catalog()
            assert catalog.route("fraud") == route(70, 30)
            assert "fraud" in catalog.models()
        finally:
            gateway_app.get_settings.cache_clear()
            gateway_app.get_catalog.cache_clear()


def test_a_replacing_deploy_keeps_the_routes_own_settings() -> None:
    from sagegate.deploy.routes import next_route

    tuned = route(100).model_copy(update={"timeout_ms": 250, "attempts": 3, "cache_ttl_s": 60, "fallback": "rules"})
    replaced = next_route(tuned, "fraud", "2", replace=True)
    assert [(v.model_version, v.weight) for v in replaced.variants] == [("2", 100)]
    assert (replaced.timeout_ms, replaced.attempts, replaced.cache_ttl_s, replaced.fallback) == (250, 3, 60, "rules")


def test_the_route_command_sets_a_models_budget_and_refuses_bad_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from sagegate.cli import app
    from sagegate.local.stack import StackPaths

    monkeypatch.setenv("SAGEGATE_HOME", str(tmp_path))
    store = SqliteRouteStore(StackPaths(tmp_path).routes)
    store.put(route(100), "deploy v1")
    result = CliRunner().invoke(app, ["route", "fraud", "--timeout-ms", "250", "--attempts", "3"])
    assert result.exit_code == 0, result.output
    assert "time budget 250 ms, attempts 3" in result.output
    now = store.get("fraud")
    assert now is not None and (now.timeout_ms, now.attempts) == (250, 3)
    assert store.history("fraud")[-1][2] == "settings timeout_ms=250, attempts=3"

    refused = CliRunner().invoke(app, ["route", "fraud", "--attempts", "9"])
    assert refused.exit_code == 1
    assert "--attempts" in refused.output and "less than or equal to 5" in refused.output
    assert CliRunner().invoke(app, ["route", "fraud", "--fallback", "nothing"]).exit_code == 1
    assert CliRunner().invoke(app, ["route", "ghost"]).exit_code == 1
    assert store.get("fraud") == now  # nothing written by a refusal
