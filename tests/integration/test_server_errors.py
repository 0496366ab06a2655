"""Bad input gets 400/413/415 naming the record and the field; a failing model gets a 500 naming it."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from sagegate.local.data import Transactions
from sagegate.packaging import BuiltPackage
from tests.integration.conftest import StartServer
from tests.integration.helpers import metric
from tests.toy_models import reshape_failing_package

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fraud_server(tmp_path_factory: pytest.TempPathFactory, fraud_logreg: BuiltPackage) -> Any:
    import shutil

    from sagegate.local.process import ServerProcess, free_port

    root = tmp_path_factory.mktemp("errors")
    shutil.copytree(fraud_logreg.path, root / "models" / "fraud")
    server = ServerProcess(root / "models", free_port(), root / "server.log", extra_args=("--max-delay-ms", "1"))
    server.wait_healthy(120)
    yield server
    assert server.stop() == 0


def good(transactions: Transactions) -> dict[str, Any]:
    return dict(transactions.records[0])


CASES: list[tuple[str, Any, int, str, dict[str, Any]]] = [
    ("unknown feature", {"colour": "red"}, 400, "field 'colour': is not a feature", {"field": "colour"}),
    ("missing feature", {"amount": None}, 400, "field 'amount': is required", {"field": "amount"}),
    ("wrong type", {"hour": "noon"}, 400, "field 'hour': expected an integer, got str", {"field": "hour"}),
    ("out of range", {"hour": 24}, 400, "24 is above the maximum 23", {"field": "hour"}),
    ("negative", {"amount": -5.0}, 400, "below the minimum 0", {"field": "amount"}),
    ("unknown category", {"channel": "fax"}, 400, "'fax' is not one of the categories", {"field": "channel"}),
    ("bool as 2", {"is_foreign": 2}, 400, "expected a boolean (true, false, 0 or 1), got 2", {"field": "is_foreign"}),
]


@pytest.mark.parametrize(("case", "change", "status", "message", "detail"), CASES, ids=[c[0] for c in CASES])
def test_bad_features_name_record_and_field(
    fraud_server: Any,
    transactions: Transactions,
    case: str,
    change: dict[str, Any],
    status: int,
    message: str,
    detail: dict[str, Any],
    client: httpx.Client,
) -> None:
    bad = {**good(transactions), **change}
    bad = {k: v for k, v in bad.items() if v is not None}
    answer = client.post(f"{fraud_server.url}/invocations", json={"instances": [good(transactions), bad]})
    assert answer.status_code == status
    body = answer.json()
    assert message in body["error"]
    assert body["record"] == 1
    assert body.items() >= detail.items()


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (b'{"instances": [', {"Content-Type": "application/json"}, 400, "not valid JSON"),
        (b"amount,hour\n1,2,3\n", {"Content-Type": "text/csv"}, 400, "record 0: expected 2 columns, got 3"),
        (b'amount,hour\n"1,2\n', {"Content-Type": "text/csv"}, 400, "malformed CSV"),
        (b"<xml/>", {"Content-Type": "application/xml"}, 415, "unsupported Content-Type"),
        (b"", {"Content-Type": "application/json"}, 400, "empty"),
        (orjson.dumps({"instances": [{}] * 1001}), {"Content-Type": "application/json"}, 413, "limit is 1000"),
        (b"x" * (6 * 1024 * 1024 + 1), {"Content-Type": "application/json"}, 413, "limit"),
    ],
    ids=["malformed json", "csv width", "malformed csv", "media type", "empty", "too many records", "over 6 MB"],
)
def test_bad_bodies(
    fraud_server: Any, body: bytes, headers: dict[str, str], status: int, message: str, client: httpx.Client
) -> None:
    answer = client.post(f"{fraud_server.url}/invocations", content=body, headers=headers)
    assert answer.status_code == status
    assert message in answer.json()["error"]


def test_unknown_routes_models_and_methods(fraud_server: Any, client: httpx.Client) -> None:
    assert client.get(f"{fraud_server.url}/nope").status_code == 404
    assert (
        client.post(f"{fraud_server.url}/models/ghost/invoke", json={}).json()["error"] == "model 'ghost' is not loaded"
    )
    assert client.put(f"{fraud_server.url}/models").status_code == 405
    assert client.get(f"{fraud_server.url}/invocations").status_code == 404
    # an answer no client can read is 406, before the body is even checked (these features are bad)
    refused = client.post(f"{fraud_server.url}/invocations", json={"features": {}}, headers={"Accept": "image/png"})
    assert refused.status_code == 406 and refused.json()["field"] == "Accept"


def test_errors_are_counted(fraud_server: Any, client: httpx.Client) -> None:
    before = metric(client, fraud_server.url, "sagegate_requests_total", model="fraud", code="400")
    client.post(f"{fraud_server.url}/invocations", json={"instances": [{"colour": 1}]})
    assert metric(client, fraud_server.url, "sagegate_requests_total", model="fraud", code="400") == before + 1
    assert metric(client, fraud_server.url, "sagegate_errors_total", model="fraud", kind="BadRequest") >= 1
    assert metric(client, fraud_server.url, "sagegate_request_duration_seconds_count", model="fraud") >= 1


def test_a_model_failing_at_run_time_is_a_500_naming_it(
    start_server: StartServer, packages_dir: Any, client: httpx.Client
) -> None:
    brittle = reshape_failing_package(packages_dir / "brittle")
    server = start_server(brittle, env={"SAGEGATE_WARMUP": "false"})
    one = {"f0": 1.0, "f1": 2.0, "f2": 3.0, "f3": 4.0}
    ok = client.post(f"{server.url}/invocations", json={"instances": [one]})
    assert ok.status_code == 200 and ok.json()["predictions"][0]["prediction"] == pytest.approx(10.0)
    failed = client.post(f"{server.url}/invocations", json={"instances": [one, one]})
    assert failed.status_code == 500
    assert failed.json()["error"].startswith("model 'brittle' failed to answer:")
    assert failed.json()["model"] == "brittle"
    # and the server is still serving
    assert client.post(f"{server.url}/invocations", json={"instances": [one]}).status_code == 200


def test_a_model_failing_its_warm_up_fails_the_start(start_server: StartServer, packages_dir: Any) -> None:
    brittle = reshape_failing_package(packages_dir / "brittle-warm", name="brittle-warm")
    server = start_server(brittle, wait=False)
    assert server.process.wait(60) == 1
    assert "failed its warm-up" in server.log_path.read_text()
