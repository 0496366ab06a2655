"""The SageMaker runtime emulator in front of real inference servers, driven by the gateway's
endpoint client and by botocore's own sagemaker-runtime client."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import uvicorn

from sagegate.endpoints import EndpointRejected, EndpointResponse, EndpointUnavailable
from sagegate.endpoints.runtime import AsyncRuntimeClient
from sagegate.local.data import Transactions
from sagegate.local.emulator import EmulatedEndpoint, RuntimeEmulator
from sagegate.local.process import ServerProcess, free_port
from sagegate.packaging import BuiltPackage
from tests.integration.conftest import StartServer
from tests.integration.helpers import expected_positive

pytestmark = pytest.mark.integration


@pytest.fixture
def emulator() -> Iterator[tuple[RuntimeEmulator, str]]:
    emulated = RuntimeEmulator()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(emulated.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield emulated, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def two_variants(
    start_server: StartServer,
    fraud_logreg: BuiltPackage,
    fraud_xgboost: BuiltPackage,
    emulator: tuple[RuntimeEmulator, str],
) -> tuple[RuntimeEmulator, str, ServerProcess, ServerProcess]:
    emulated, url = emulator
    v1, v2 = start_server(fraud_logreg), start_server(fraud_xgboost)
    emulated.endpoints["fraud-prod"] = EmulatedEndpoint.model_validate(
        {
            "name": "fraud-prod",
            "variants": [{"name": "v1", "url": v1.url, "weight": 80}, {"name": "v2", "url": v2.url, "weight": 20}],
        }
    )
    return emulated, url, v1, v2


class _Client:
    """The gateway's client, one call per event loop (each call makes and closes its own)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def invoke(self, endpoint: str, body: bytes, **kwargs: Any) -> EndpointResponse:
        async def call() -> EndpointResponse:
            client = AsyncRuntimeClient(region="local", endpoint_url=self.url)
            try:
                return await client.invoke(endpoint, body, timeout=30, **kwargs)
            finally:
                await client.aclose()

        return asyncio.run(call())


def client(url: str) -> _Client:
    return _Client(url)


def botocore_client(url: str) -> Any:
    from botocore.session import get_session

    return get_session().create_client("sagemaker-runtime", region_name="local", endpoint_url=url)


def test_target_variant_reaches_that_variants_model(
    two_variants: tuple,
    transactions: Transactions,  # type: ignore[type-arg]
    fraud_logreg: BuiltPackage,
    fraud_xgboost: BuiltPackage,
) -> None:
    _, url, _, _ = two_variants
    records = transactions.records[:20]
    body = orjson.dumps({"instances": records})
    for variant, package in (("v1", fraud_logreg), ("v2", fraud_xgboost)):
        answer = client(url).invoke(
            "fraud-prod", body, target_variant=variant, inference_id="p-1", custom_attributes="trace=abc"
        )
        assert answer.invoked_variant == variant
        got = [p["prediction"] for p in orjson.loads(answer.body)["predictions"]]
        np.testing.assert_allclose(got, expected_positive(package, records), atol=1e-6)


def test_weights_split_traffic(two_variants: tuple, transactions: Transactions) -> None:  # type: ignore[type-arg]
    emulated, url, _, _ = two_variants
    body = orjson.dumps({"features": transactions.records[0]})
    c = client(url)
    shares = Counter(c.invoke("fraud-prod", body).invoked_variant for _ in range(400))
    # Binomial(400, 0.2): sd = 8; 5 sd either way.
    assert abs(shares["v2"] - 80) < 40 and shares["v1"] + shares["v2"] == 400

    # a deployment moves the weights at run time
    moved = httpx.put(
        f"{url}/_sagegate/endpoints/fraud-prod",
        json={
            "variants": [
                {"name": "v1", "url": emulated.endpoints["fraud-prod"].variants[0].url, "weight": 0},
                {"name": "v2", "url": emulated.endpoints["fraud-prod"].variants[1].url, "weight": 1},
            ]
        },
    )
    assert moved.status_code == 200
    assert {c.invoke("fraud-prod", body).invoked_variant for _ in range(20)} == {"v2"}


def test_sagemaker_shaped_errors(two_variants: tuple, transactions: Transactions) -> None:  # type: ignore[type-arg]
    _, url, v1, _ = two_variants
    c = client(url)
    bad = orjson.dumps({"features": {**transactions.records[0], "hour": 99}})
    with pytest.raises(EndpointRejected, match="field 'hour'") as rejected:
        c.invoke("fraud-prod", bad, target_variant="v1")
    assert rejected.value.status == 400
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as by_botocore:  # botocore reads the emulator's error as SageMaker's
        botocore_client(url).invoke_endpoint(
            EndpointName="fraud-prod", Body=bad, TargetVariant="v1", ContentType="application/json"
        )
    assert by_botocore.value.response["Error"]["Code"] == "ModelError"
    assert by_botocore.value.response["OriginalStatusCode"] == 400
    with pytest.raises(EndpointUnavailable, match="ValidationError: Endpoint nope not found"):
        c.invoke("nope", b"{}")
    with pytest.raises(EndpointUnavailable, match="Variant v9 not found"):
        c.invoke("fraud-prod", b"{}", target_variant="v9")
    v1.stop()
    with pytest.raises(EndpointUnavailable, match="ServiceUnavailable"):
        c.invoke("fraud-prod", orjson.dumps({"features": transactions.records[0]}), target_variant="v1")


def test_a_shadow_variant_gets_copies_and_never_answers(two_variants: tuple, transactions: Transactions) -> None:  # type: ignore[type-arg]
    emulated, url, v1, v2 = two_variants
    emulated.endpoints["fraud-prod"] = EmulatedEndpoint.model_validate(
        {
            "name": "fraud-prod",
            "variants": [
                {"name": "v1", "url": v1.url, "weight": 1},
                {"name": "v2", "url": v2.url, "weight": 1, "shadow": True},
            ],
        }
    )
    body = orjson.dumps({"features": transactions.records[0]})
    answers = {client(url).invoke("fraud-prod", body).invoked_variant for _ in range(10)}
    assert answers == {"v1"}
    deadline = time.monotonic() + 10
    with httpx.Client() as c:
        from tests.integration.helpers import metric

        while metric(c, v2.url, "sagegate_requests_total", code="200") < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric(c, v2.url, "sagegate_requests_total", code="200") == 10
