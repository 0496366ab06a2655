"""The gateway as a process (uvicorn), with a real redis-server, the emulator and inference servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from sagegate.local.data import Transactions
from sagegate.local.process import ServerProcess, free_port, wait_healthy
from sagegate.packaging import BuiltPackage
from tests.integration.conftest import StartServer
from tests.integration.helpers import metric

pytestmark = pytest.mark.integration


class Service:
    def __init__(self, command: list[str], env: dict[str, str], log: Path, url: str, health: str) -> None:
        self.url = url
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            command, env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_healthy(f"{url}{health}", 60, self.process)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


@dataclass
class Stack:
    gateway: Service
    emulator: Service
    servers: dict[str, ServerProcess]
    redis_url: str
    redis_process: subprocess.Popen[bytes]
    log_path: Path

    def predict(self, **body: Any) -> httpx.Response:
        return httpx.post(f"{self.gateway.url}/v1/predict", json={"model": "fraud", **body}, timeout=30)

    def server_requests(self, variant: str) -> float:
        with httpx.Client() as c:
            return metric(c, self.servers[variant].url, "sagegate_requests_total", code="200")


@pytest.fixture
def stack(
    tmp_path: Path,
    start_server: StartServer,
    fraud_logreg: BuiltPackage,
    fraud_xgboost: BuiltPackage,
    redis_server: tuple[str, subprocess.Popen[bytes]],
) -> Iterator[Callable[..., Stack]]:
    started: list[Service] = []

    def make(*, ttl: int = 3600, fallback: bool = False, weights: tuple[int, int] = (80, 20)) -> Stack:
        v1, v2 = start_server(fraud_logreg), start_server(fraud_xgboost)
        catalog = tmp_path / "catalog"
        catalog.mkdir(exist_ok=True)
        for package, version, name in ((fraud_logreg, "1", "fraud"), (fraud_xgboost, "2", "fraud")):
            manifest = package.manifest.model_copy(update={"name": name, "version": version})
            (catalog / f"{name}-{version}").mkdir(exist_ok=True)
            (catalog / f"{name}-{version}" / "manifest.json").write_text(manifest.dumps())
        (catalog / "rules-1").mkdir(exist_ok=True)
        (catalog / "rules-1" / "manifest.json").write_text(
            fraud_logreg.manifest.model_copy(update={"name": "rules", "version": "1"}).dumps()
        )
        routes = [
            {
                "model": "fraud",
                "endpoint": "fraud-prod",
                "cache_ttl_s": ttl,
                "fallback": "rules" if fallback else None,
                "variants": [
                    {"name": "v1", "model_version": "1", "weight": weights[0]},
                    {"name": "v2", "model_version": "2", "weight": weights[1]},
                ],
            },
            {
                "model": "rules",
                "endpoint": "rules-prod",
                "variants": [{"name": "r1", "model_version": "1", "weight": 1}],
            },
        ]
        (catalog / "routes.json").write_bytes(orjson.dumps(routes))
        rules = start_server(fraud_logreg)
        endpoints = [
            {
                "name": "fraud-prod",
                "variants": [
                    {"name": "v1", "url": v1.url, "weight": weights[0]},
                    {"name": "v2", "url": v2.url, "weight": weights[1]},
                ],
            },
            {"name": "rules-prod", "variants": [{"name": "r1", "url": rules.url}]},
        ]
        (tmp_path / "endpoints.json").write_bytes(orjson.dumps(endpoints))
        port = free_port()
        emulator = Service(
            [
                sys.executable,
                "-m",
                "sagegate.local.emulator",
                "--port",
                str(port),
                "--config",
                str(tmp_path / "endpoints.json"),
            ],
            {},
            tmp_path / "emulator.log",
            f"http://127.0.0.1:{port}",
            "/ping",
        )
        started.append(emulator)
        port = free_port()
        log_path = tmp_path / "predictions.jsonl"
        redis_url, redis_process = redis_server
        gateway = Service(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "sagegate.gateway.app:create_app",
                "--factory",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            {
                "SAGEGATE_GATEWAY_REDIS_URL": redis_url,
                "SAGEGATE_GATEWAY_ENDPOINT_URL": emulator.url,
                "SAGEGATE_GATEWAY_CATALOG_DIR": str(catalog),
                "SAGEGATE_GATEWAY_PREDICTION_LOG_PATH": str(log_path),
                "SAGEGATE_GATEWAY_REGION": "eu-west-1",
                # Generous Redis budgets: these tests are about the cache's behaviour, and a busy
                # 2-core machine must not trip the 20 ms production budget (tested on its own).
                "SAGEGATE_GATEWAY_CACHE_BUDGET_MS": "1000",
                "SAGEGATE_GATEWAY_FEATURE_BUDGET_MS": "1000",
                # and a generous endpoint budget: a cold first call under CI's load can pass the
                # 100 ms default, which would turn a cache test into a degraded answer (CI saw it)
                "SAGEGATE_GATEWAY_INVOKE_TIMEOUT_MS": "3000",
            },
            tmp_path / "gateway.log",
            f"http://127.0.0.1:{port}",
            "/health",
        )
        started.append(gateway)
        return Stack(gateway, emulator, {"v1": v1, "v2": v2, "r1": rules}, redis_url, redis_process, log_path)

    yield make
    for service in started:
        service.stop()


def _log_lines(path: Path, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    """The prediction log's lines once it has `count` of them (or what it has after `timeout` s)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        lines = [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_miss_then_hit_and_the_log(stack: Callable[..., Stack], transactions: Transactions) -> None:
    s = stack()
    features = transactions.records[0]
    first, second = s.predict(features=features, user_id="u1").json(), s.predict(features=features, user_id="u1").json()
    assert (first["cache_hit"], second["cache_hit"]) == (False, True)
    assert second["prediction"] == first["prediction"] and second["variant"] == first["variant"]
    # The log is written after the answer has gone (the middleware's flush): wait for both lines.
    lines = _log_lines(s.log_path, 2)
    assert [line["prediction_id"] for line in lines] == [first["prediction_id"], second["prediction_id"]]
    assert s.server_requests(first["variant"]) == 1


def test_ttl_expiry(stack: Callable[..., Stack], transactions: Transactions) -> None:
    import time

    s = stack(ttl=1)
    features = transactions.records[1]
    assert s.predict(features=features, version="1").json()["cache_hit"] is False
    assert s.predict(features=features, version="1").json()["cache_hit"] is True
    time.sleep(1.2)
    assert s.predict(features=features, version="1").json()["cache_hit"] is False
    assert s.server_requests("v1") == 2


def test_concurrent_identical_misses_make_one_endpoint_call(
    stack: Callable[..., Stack], transactions: Transactions
) -> None:
    s = stack()
    features = transactions.records[2]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: s.predict(features=features, version="2").json(), range(16)))
    assert [a["degraded_reason"] for a in answers if a["degraded"]] == []
    assert len({a["prediction"] for a in answers}) == 1
    assert sum(not a["cache_hit"] for a in answers) == 1
    assert s.server_requests("v2") == 1  # the inference server's own counter


def test_online_features_fill_what_the_request_leaves_out(
    stack: Callable[..., Stack], transactions: Transactions
) -> None:
    s = stack()
    record = transactions.records[3]
    stored = {"account_age_days": 12, "transactions_24h": 9, "unrelated": "ignored"}
    redis.Redis.from_url(s.redis_url).hset(
        "sagegate:feat:user_id:u77", mapping={k: orjson.dumps(v) for k, v in stored.items()}
    )
    plain = {k: v for k, v in record.items() if k not in ("account_age_days", "transactions_24h")}
    enriched = s.predict(features=plain, user_id="u77", version="1").json()
    explicit = s.predict(features={**plain, "account_age_days": 12, "transactions_24h": 9}, version="1").json()
    assert enriched["prediction"] == pytest.approx(explicit["prediction"])
    assert explicit["cache_hit"] is True  # the same features after enrichment: the same cache key


def test_redis_killed_mid_test_answers_continue_uncached(
    stack: Callable[..., Stack], transactions: Transactions
) -> None:
    s = stack()
    assert s.predict(features=transactions.records[4], user_id="a").status_code == 200
    s.redis_process.kill()
    s.redis_process.wait()
    answers = [s.predict(features=transactions.records[4], user_id="a") for _ in range(3)]
    assert all(a.status_code == 200 for a in answers)
    assert all(a.json()["cache_hit"] is False and a.json()["degraded"] is False for a in answers)


def test_model_server_killed_answers_are_flagged_fallbacks(
    stack: Callable[..., Stack], transactions: Transactions
) -> None:
    s = stack(fallback=True, weights=(100, 0))
    s.servers["v1"].stop()
    answer = s.predict(features=transactions.records[5], user_id="b").json()
    assert answer["degraded"] is True and answer["variant"] == "r1"
    assert "ServiceUnavailable" in answer["degraded_reason"]


def test_runtime_unreachable_without_fallback_gives_the_default(
    stack: Callable[..., Stack], transactions: Transactions
) -> None:
    s = stack(weights=(100, 0))
    s.emulator.stop()  # every InvokeEndpoint now fails at the connection
    answer = s.predict(features=transactions.records[6], user_id="c")
    # fraud v1's manifest declares default_prediction 0.0 (examples.build_fraud_package)
    assert answer.status_code == 200 and answer.json()["degraded"] is True
    assert answer.json()["prediction"] == 0.0


def test_the_lambda_handler_answers_an_api_gateway_proxy_event(
    stack: Callable[..., Stack], transactions: Transactions, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib.util

    from sagegate.gateway import app as gateway_app

    s = stack()
    environment = {
        "SAGEGATE_GATEWAY_REDIS_URL": s.redis_url,
        "SAGEGATE_GATEWAY_ENDPOINT_URL": s.emulator.url,
        "SAGEGATE_GATEWAY_CATALOG_DIR": str(tmp_path / "catalog"),
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_METRICS_NAMESPACE": "sagegate",
        "AWS_LAMBDA_FUNCTION_NAME": "sagegate-gateway",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    for cached in (gateway_app.get_settings, gateway_app.get_catalog, gateway_app.get_predictor):
        cached.cache_clear()
    spec = importlib.util.spec_from_file_location("gateway_handler", Path("functions/gateway/handler.py"))
    assert spec is not None and spec.loader is not None
    handler = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(handler)

    body = orjson.dumps({"model": "fraud", "features": transactions.records[7], "user_id": "lambda-user"}).decode()
    event = {
        "resource": "/{proxy+}",
        "path": "/v1/predict",
        "httpMethod": "POST",
        "headers": {"content-type": "application/json", "host": "abc123.execute-api.eu-west-1.amazonaws.com"},
        "multiValueHeaders": {
            "content-type": ["application/json"],
            "host": ["abc123.execute-api.eu-west-1.amazonaws.com"],
        },
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": "v1/predict"},
        "stageVariables": None,
        "body": body,
        "isBase64Encoded": False,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": "POST",
            "path": "/prod/v1/predict",
            "stage": "prod",
            "requestId": "r-1",
            "identity": {"sourceIp": "203.0.113.7"},
            "accountId": "123456789012",
            "apiId": "abc123",
        },
    }

    class Context:
        function_name = "sagegate-gateway"
        memory_limit_in_mb = 1024
        invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:sagegate-gateway"
        aws_request_id = "req-1"

    response = handler.handler(event, Context())
    assert response["statusCode"] == 200, response
    answer = orjson.loads(response["body"])
    assert answer["variant"] in {"v1", "v2"} and answer["degraded"] is False
    for cached in (gateway_app.get_settings, gateway_app.get_catalog, gateway_app.get_predictor):
        cached.cache_clear()


def test_explain_answers_the_prediction_with_each_features_contribution_and_caches_it(
    stack: Callable[..., Stack], transactions: Transactions
) -> None:
    """Through the gateway, the emulator (CustomAttributes explain=true) and a model server: the
    contributions add up to the output the explanation names, and the prediction is the one a plain
    request gets."""
    import math

    s = stack(weights=(0, 100))  # v2: the XGBoost model, explained exactly (TreeSHAP) in log-odds
    features = transactions.records[1]
    explained = httpx.post(f"{s.gateway.url}/v1/explain", json={"model": "fraud", "features": features}, timeout=30)
    assert explained.status_code == 200, explained.text
    first = explained.json()
    explanation = first["explanation"]
    assert (explanation["method"], explanation["output_space"]) == ("tree", "margin")
    assert set(explanation["contributions"]) == set(features)
    total = explanation["base_value"] + sum(explanation["contributions"].values())
    assert total == pytest.approx(explanation["output"], abs=1e-6)
    assert 1 / (1 + math.exp(-total)) == pytest.approx(first["prediction"], abs=1e-4)  # the positive's probability
    again = s.predict(features=features, explain=True).json()
    assert again["cache_hit"] and again["explanation"] == explanation  # explanations are cached too
    plain = s.predict(features=features).json()
    assert plain["explanation"] is None and not plain["cache_hit"]  # not the explained entry
    assert plain["prediction"] == pytest.approx(first["prediction"])
    described = httpx.get(f"{s.gateway.url}/v1/models/fraud", timeout=30).json()
    assert set(described["feature_importance"]["2"]) == set(features)
    # `sagegate predict --explain`: the answer, then its waterfall from the base value to the output
    command = [sys.executable, "-m", "sagegate", "predict", "fraud", "--features", orjson.dumps(features).decode()]
    shown = subprocess.run(
        [*command, "--explain", "--url", s.gateway.url],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=120,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    drawn = shown.stdout[shown.stdout.index("why (tree, margin of") :]
    rows = [line.split("│")[1].strip() for line in drawn.splitlines() if line.startswith("│")]
    by_size = sorted(explanation["contributions"], key=lambda f: -abs(explanation["contributions"][f]))
    assert rows == ["base value", *by_size, "output"]
    assert f"{explanation['base_value']:.4f}" in drawn and f"{explanation['output']:.4f}" in drawn
