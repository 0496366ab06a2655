"""InvokeEndpoint without holding a thread: botocore makes and reads the messages, a transport carries them.

botocore's client is synchronous: under uvicorn every call would hold a thread for the whole round
trip, and a hung model would hold them all. Here botocore still does what it is the authority on:
it serializes the request from the service model (headers, path), signs it (SigV4, with the
session's credentials, refreshed as botocore refreshes them) and parses the errors (the modeled
error shapes, e.g. ModelError's OriginalStatusCode). What carries the bytes depends on where the
gateway runs:

- under uvicorn, `AiohttpTransport`: an aiohttp session with a bounded keep-alive pool, many calls
  in flight on one event loop (httpx's async pool cost ~2.2 ms of CPU per request at 64 in flight
  here, aiohttp's ~0.14 ms: `benchmarks/http_clients.py`);
- in Lambda, `Urllib3Transport`: botocore's own HTTP library, already imported, so the cold start
  pays nothing more. It blocks the event loop for the call, which in Lambda costs nothing: an
  execution environment serves one request at a time.

Each call has a deadline, not a timeout per attempt: a second attempt is made only when the first
failed fast and in a way another attempt can fix (the connection was refused or dropped, the
service was throttled or briefly unavailable) and time is left for it. A call that runs out of
time is never retried: the caller's degraded answer is what time is left for.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any, Protocol

from sagegate.endpoints.protocol import EndpointRejected, EndpointResponse, EndpointUnavailable

__all__ = ["RETRYABLE_CODES", "AiohttpTransport", "AsyncRuntimeClient", "Transport", "Urllib3Transport"]

# Error codes worth a second attempt: the request did not reach a model, or the service asks to
# slow down. A ModelError (the container answered an error) or a ValidationError would recur.
RETRYABLE_CODES = frozenset(
    {"ServiceUnavailable", "InternalFailure", "ThrottlingException", "Throttling", "TooManyRequestsException"}
)
_BACKOFF_S = 0.005  # up to this much (jittered) before the second attempt, if the deadline allows


class TimedOut(Exception):
    """No answer within the time given."""


class Dropped(Exception):
    """The connection was refused, reset or closed before an answer: another attempt may succeed."""


class Transport(Protocol):
    async def post(
        self, url: str, headers: dict[str, str], body: bytes, timeout: float
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers with lower-case names, body); raises TimedOut or Dropped."""
        ...

    async def close(self) -> None: ...


class AiohttpTransport:
    def __init__(self, *, connect_timeout: float = 1.0, max_connections: int = 256) -> None:
        import aiohttp  # noqa: F401  (now, not on the first request: its import takes ~0.1 s)

        self._connect_timeout = connect_timeout
        self._max_connections = max_connections
        self._session: Any = None

    def _open(self) -> Any:
        import aiohttp

        if self._session is None or self._session.closed:  # made inside the running loop, on first use
            connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300)
            # Headers go out exactly as signed: no Content-Type or User-Agent added.
            self._session = aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent", "Content-Type"))
        return self._session

    async def post(
        self, url: str, headers: dict[str, str], body: bytes, timeout: float
    ) -> tuple[int, dict[str, str], bytes]:
        import aiohttp

        limit = aiohttp.ClientTimeout(total=timeout, sock_connect=min(self._connect_timeout, timeout))
        try:
            async with self._open().post(url, data=body, headers=headers, timeout=limit) as response:
                content = await response.read()
                return response.status, {k.lower(): v for k, v in response.headers.items()}, content
        except TimeoutError:
            raise TimedOut from None
        except aiohttp.ClientError as exc:  # refused, reset, cut short mid-answer, or not HTTP at all
            raise Dropped(f"{type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class Urllib3Transport:
    def __init__(self, *, connect_timeout: float = 1.0, max_connections: int = 10) -> None:
        import urllib3

        self._connect_timeout = connect_timeout
        self._pool = urllib3.PoolManager(maxsize=max_connections, retries=False)

    async def post(
        self, url: str, headers: dict[str, str], body: bytes, timeout: float
    ) -> tuple[int, dict[str, str], bytes]:
        import urllib3

        limit = urllib3.Timeout(total=timeout, connect=min(self._connect_timeout, timeout))
        try:
            response = self._pool.request("POST", url, body=body, headers=headers, timeout=limit, retries=False)
        except urllib3.exceptions.NewConnectionError as exc:  # refused (a subclass of the timeout error)
            raise Dropped(f"{type(exc).__name__}: {exc}") from None
        except urllib3.exceptions.TimeoutError:
            raise TimedOut from None
        except urllib3.exceptions.ProtocolError as exc:  # reset, or a kept-alive connection closed
            raise Dropped(f"{type(exc).__name__}: {exc}") from None
        return response.status, {k.lower(): v for k, v in response.headers.items()}, response.data

    async def close(self) -> None:
        self._pool.clear()


class AsyncRuntimeClient:
    def __init__(
        self,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        session: Any | None = None,
        transport: Transport | None = None,
        sign: bool = True,
    ) -> None:
        from botocore.auth import SigV4Auth
        from botocore.parsers import create_parser
        from botocore.serialize import create_serializer
        from botocore.session import get_session

        session = session or get_session()
        client = session.create_client("sagemaker-runtime", region_name=region, endpoint_url=endpoint_url)
        service = client.meta.service_model
        self._operation = service.operation_model("InvokeEndpoint")
        self._serializer = create_serializer(service.protocol, include_validation=True)
        self._parser = create_parser(service.protocol)
        self._endpoint_url = client.meta.endpoint_url
        self._region = client.meta.region_name
        self._signing_name = service.signing_name
        self._credentials = session.get_credentials() if sign else None
        self._signer = SigV4Auth
        self._transport = transport or AiohttpTransport()

    async def aclose(self) -> None:
        await self._transport.close()

    def _signed(self, params: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
        from botocore.awsrequest import AWSRequest, prepare_request_dict

        request_dict = self._serializer.serialize_to_request(params, self._operation)
        prepare_request_dict(request_dict, endpoint_url=self._endpoint_url)
        request = AWSRequest(
            method=request_dict["method"], url=request_dict["url"], headers=request_dict["headers"], data=params["Body"]
        )
        if self._credentials is not None:
            frozen = self._credentials.get_frozen_credentials()
            self._signer(frozen, self._signing_name, self._region).add_auth(request)
        return request.url, dict(request.headers.items()), params["Body"]

    async def invoke(
        self,
        endpoint: str,
        body: bytes,
        *,
        content_type: str = "application/json",
        accept: str = "application/json",
        target_variant: str | None = None,
        inference_id: str | None = None,
        custom_attributes: str | None = None,
        timeout: float = 1.0,
        attempts: int = 2,
    ) -> EndpointResponse:
        """The endpoint's answer within `timeout` seconds (all attempts together), or an EndpointError."""
        params: dict[str, Any] = {"EndpointName": endpoint, "Body": body, "ContentType": content_type, "Accept": accept}
        if target_variant:
            params["TargetVariant"] = target_variant
        if inference_id:
            params["InferenceId"] = inference_id
        if custom_attributes:
            params["CustomAttributes"] = custom_attributes
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._attempt(endpoint, params, deadline, timeout)
            except _Retryable as exc:
                left = deadline - time.monotonic()
                pause = random.uniform(0, _BACKOFF_S)
                # Only when the failure came fast enough that another attempt can still answer in time.
                if attempt >= attempts or left <= pause + timeout / 4:
                    raise EndpointUnavailable(str(exc)) from None
                await asyncio.sleep(pause)

    async def _attempt(self, endpoint: str, params: dict[str, Any], deadline: float, budget: float) -> EndpointResponse:
        left = deadline - time.monotonic()
        if left <= 0:
            raise EndpointUnavailable(f"endpoint {endpoint!r}: no answer within {budget * 1000:.0f} ms")
        url, headers, body = self._signed(params)
        try:
            status, answer_headers, content = await self._transport.post(url, headers, body, left)
        except TimedOut:
            raise EndpointUnavailable(f"endpoint {endpoint!r}: no answer within {budget * 1000:.0f} ms") from None
        except Dropped as exc:
            raise _Retryable(f"endpoint {endpoint!r}: {exc}") from None
        if status < 300:
            return EndpointResponse(
                body=content,
                content_type=answer_headers.get("content-type", params["Accept"]),
                invoked_variant=answer_headers.get("x-amzn-invoked-production-variant"),
                custom_attributes=answer_headers.get("x-amzn-sagemaker-custom-attributes"),
            )
        raise self._error(endpoint, status, answer_headers, content)

    def _error(self, endpoint: str, status: int, headers: dict[str, str], content: bytes) -> Exception:
        """The error as botocore reads it (its code, and the fields its modeled shape declares)."""
        from botocore.awsrequest import HeadersDict

        answer = {"status_code": status, "headers": HeadersDict(headers), "body": content}
        parsed = self._parser.parse(answer, self._operation.output_shape)
        code = parsed.get("Error", {}).get("Code") or f"HTTP{status}"
        shape = self._operation.service_model.shape_for_error_code(code)
        if shape is not None:
            parsed.update(self._parser.parse(answer, shape))
        message = parsed.get("Error", {}).get("Message") or parsed.get("Message") or f"HTTP {status}"
        original = parsed.get("OriginalStatusCode")
        if code == "ModelError" and isinstance(original, int) and 400 <= original < 500:
            return EndpointRejected(parsed.get("OriginalMessage") or message, status=original)
        if code in RETRYABLE_CODES or status in (429, 503):
            return _Retryable(f"endpoint {endpoint!r}: {code}: {message}")
        return EndpointUnavailable(f"endpoint {endpoint!r}: {code}: {message}")


class _Retryable(EndpointUnavailable):
    """A failure another attempt may not have."""
