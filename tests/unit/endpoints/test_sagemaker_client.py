"""AsyncRuntimeClient on the wire, against botocore's own sagemaker-runtime client on the same wire.

A small HTTP server (aiohttp) stands where SageMaker's runtime would and answers what it is told,
in SageMaker's format (`x-amzn-ErrorType`, JSON bodies with the modeled fields). Every test sends
the same call through botocore's client too: the request botocore makes is the reference for
ours (path, headers, signing scope), and the error botocore parses is the reference for our
classification. What this cannot prove: that SageMaker answers these errors in this format; the
shapes and codes come from botocore's service model, which is AWS's own description of the API.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.session import get_session

from sagegate.endpoints import EndpointRejected, EndpointUnavailable
from sagegate.endpoints.runtime import AiohttpTransport, AsyncRuntimeClient, Transport, Urllib3Transport


@dataclass
class FakeRuntime:
    """Answers each request with the next of `answers` (status, error code or None, body fields),
    repeating the last; records the requests."""

    answers: list[tuple[int, str | None, dict[str, Any]]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    delay: float = 0.0
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append({"path": request.path, "headers": dict(request.headers), "body": await request.read()})
        if self.delay:
            await asyncio.sleep(self.delay)
        status, code, fields = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if code is None:
            return web.Response(
                body=orjson.dumps({"predictions": [{"prediction": 0.9}]}),
                content_type="application/json",
                headers={"X-Amzn-Invoked-Production-Variant": "v2", "X-Amzn-SageMaker-Custom-Attributes": "a=1"},
            )
        body = orjson.dumps({"message": fields.pop("message", "nope"), **fields})
        return web.Response(
            status=status,
            body=body,
            content_type="application/json",
            headers={"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/"},
        )


@pytest.fixture
def runtime() -> Iterator[FakeRuntime]:
    fake = FakeRuntime()
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/endpoints/{name}/invocations", fake.handle)
    runner = web.AppRunner(app)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    fake.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.SockSite(runner, sock).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield fake
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def _session() -> Any:
    session = get_session()
    session.set_credentials("AKIDEXAMPLE", "secret")
    return session


@pytest.fixture(params=["aiohttp", "urllib3"])
def transport(request: pytest.FixtureRequest) -> str:
    """Every test runs on both transports: aiohttp (uvicorn) and urllib3 (Lambda)."""
    return str(request.param)


def ours(url: str, transport: str) -> AsyncRuntimeClient:
    carrier: Transport = AiohttpTransport() if transport == "aiohttp" else Urllib3Transport()
    return AsyncRuntimeClient(region="eu-west-1", endpoint_url=url, session=_session(), transport=carrier)


def botocores(url: str) -> Any:
    config = Config(retries={"total_max_attempts": 1}, read_timeout=5)
    return _session().create_client("sagemaker-runtime", region_name="eu-west-1", endpoint_url=url, config=config)


def invoke(client: AsyncRuntimeClient, **kwargs: Any) -> Any:
    async def call() -> Any:
        try:
            return await client.invoke("fraud-prod", b'{"features": {}}', **kwargs)
        finally:
            await client.aclose()

    return asyncio.run(call())


CALL = {"target_variant": "v2", "inference_id": "p-1", "custom_attributes": "model=fraud"}


def test_the_request_is_the_one_botocore_makes(runtime: FakeRuntime, transport: str) -> None:
    runtime.answers = [(200, None, {})]
    answer = invoke(ours(runtime.url, transport), **CALL)
    assert (answer.invoked_variant, answer.custom_attributes) == ("v2", "a=1")
    assert orjson.loads(answer.body) == {"predictions": [{"prediction": 0.9}]}
    botocores(runtime.url).invoke_endpoint(
        EndpointName="fraud-prod",
        Body=b'{"features": {}}',
        ContentType="application/json",
        Accept="application/json",
        TargetVariant="v2",
        InferenceId="p-1",
        CustomAttributes="model=fraud",
    )
    mine, reference = runtime.requests
    assert mine["path"] == reference["path"] == "/endpoints/fraud-prod/invocations"
    assert mine["body"] == reference["body"]
    amz = {k.lower(): v for k, v in reference["headers"].items() if k.lower().startswith("x-amzn-sagemaker")}
    assert {k.lower(): v for k, v in mine["headers"].items() if k.lower().startswith("x-amzn-sagemaker")} == amz
    assert amz["x-amzn-sagemaker-target-variant"] == "v2"

    def scope(headers: dict[str, str]) -> tuple[str, str]:
        auth = headers["Authorization"]
        credential = auth.split("Credential=")[1].split(",")[0].split("/", 2)[2]  # region/service/aws4_request
        return credential, auth.split("SignedHeaders=")[1].split(",")[0]

    assert scope(mine["headers"]) == scope(reference["headers"])
    assert scope(mine["headers"])[0] == "eu-west-1/sagemaker/aws4_request"


@pytest.mark.parametrize(
    ("status", "code", "fields", "error", "message", "attempts"),
    [
        (
            424,
            "ModelError",
            {"OriginalStatusCode": 400, "OriginalMessage": "field 'hour'"},
            EndpointRejected,
            "'hour'",
            1,
        ),
        (
            424,
            "ModelError",
            {"OriginalStatusCode": 500, "OriginalMessage": "boom"},
            EndpointUnavailable,
            "ModelError",
            1,
        ),
        (400, "ValidationError", {}, EndpointUnavailable, "ValidationError", 1),
        (503, "ServiceUnavailable", {}, EndpointUnavailable, "ServiceUnavailable", 2),
        (400, "ThrottlingException", {}, EndpointUnavailable, "ThrottlingException", 2),
        (500, "InternalFailure", {}, EndpointUnavailable, "InternalFailure", 2),
    ],
)
def test_errors_are_read_as_botocore_reads_them_and_retried_only_where_another_try_can_help(
    runtime: FakeRuntime,
    transport: str,
    status: int,
    code: str,
    fields: dict[str, Any],
    error: type[Exception],
    message: str,
    attempts: int,
) -> None:
    runtime.answers = [(status, code, dict(fields))]
    with pytest.raises(ClientError) as reference:
        botocores(runtime.url).invoke_endpoint(EndpointName="fraud-prod", Body=b"{}")
    assert reference.value.response["Error"]["Code"] == code  # what botocore reads is what we act on
    for name, value in fields.items():
        assert reference.value.response[name] == value
    runtime.requests.clear()
    with pytest.raises(error, match=message) as ours_error:
        invoke(ours(runtime.url, transport), timeout=2.0, attempts=2)
    assert len(runtime.requests) == attempts
    if error is EndpointRejected:
        assert ours_error.value.status == fields["OriginalStatusCode"]  # type: ignore[attr-defined]


def test_a_retry_that_succeeds_returns_the_answer(runtime: FakeRuntime, transport: str) -> None:
    runtime.answers = [(503, "ServiceUnavailable", {}), (200, None, {})]
    assert invoke(ours(runtime.url, transport), timeout=2.0, attempts=2).invoked_variant == "v2"
    assert len(runtime.requests) == 2


def test_a_slow_endpoint_spends_the_budget_once_without_a_retry(runtime: FakeRuntime, transport: str) -> None:
    runtime.answers, runtime.delay = [(200, None, {})], 2.0
    with pytest.raises(EndpointUnavailable, match="no answer within 150 ms"):
        invoke(ours(runtime.url, transport), timeout=0.15, attempts=3)
    assert len(runtime.requests) == 1


def test_a_refused_connection_is_retried_within_the_budget(transport: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(EndpointUnavailable, match=r"ClientConnectorError|NewConnectionError"):
        invoke(ours(f"http://127.0.0.1:{port}", transport), timeout=1.0, attempts=2)


def _raw_server(answer: bytes) -> tuple[str, threading.Thread]:
    """A server that reads one request, writes `answer` as is and closes: what a runtime killed
    mid-answer, or something that is not HTTP, looks like on the wire."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def serve() -> None:
        with server:
            server.settimeout(5)
            for _ in range(2):  # one per attempt
                try:
                    connection, _ = server.accept()
                except OSError:
                    return
                with connection:
                    connection.recv(65536)
                    connection.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{server.getsockname()[1]}", thread


@pytest.mark.parametrize(
    "answer",
    [
        b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"predic',  # cut short
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"pre',  # a chunk cut short
        b"SSH-2.0-OpenSSH_9.2\r\n",  # not HTTP at all
        b"",  # closed without a word
    ],
    ids=["content-length", "chunked", "not-http", "empty"],
)
def test_an_answer_cut_short_or_not_http_is_a_failure_to_retry_never_another_exception(
    answer: bytes, transport: str
) -> None:
    url, thread = _raw_server(answer)
    with pytest.raises(EndpointUnavailable):
        invoke(ours(url, transport), timeout=1.0, attempts=2)
    thread.join(10)
