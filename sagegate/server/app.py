"""The HTTP layer of the inference server: a small ASGI app that parses, delegates and answers.

Plain ASGI rather than a framework: this is the hot path of every prediction, and the routes
are fixed by the SageMaker container contract. Logic lives in the data plane.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson

from sagegate.server import codecs
from sagegate.server.config import ServerConfig
from sagegate.server.dataplane import DataPlane, ServedModel
from sagegate.server.exceptions import (
    BadRequest,
    MethodNotAllowed,
    ModelLoadError,
    NotAcceptable,
    PayloadTooLarge,
    RouteNotFound,
    ServerError,
    ServiceUnavailable,
)
from sagegate.server.metrics import CONTENT_TYPE_LATEST, ServerMetrics
from sagegate.server.oip.rest import OipRoutes

__all__ = ["InferenceApp"]

log = logging.getLogger("sagegate.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_CONTROL_BODY_LIMIT = 1024 * 1024
_JSON = b"application/json"


class _Request:
    __slots__ = ("headers", "method", "path", "query", "receive")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query: bytes = scope.get("query_string", b"")
        self.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.receive = receive

    async def body(self, limit: int) -> bytes:
        declared = self.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"the body is {int(declared)} bytes; the limit is {limit}")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ConnectionAbortedError("client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def json(self) -> Any:
        try:
            return orjson.loads(await self.body(_CONTROL_BODY_LIMIT))
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from None


async def _answer(
    send: Send, status: int, body: bytes, content_type: bytes = _JSON, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _attribute(headers: dict[str, str], name: str) -> str | None:
    """A key=value of SageMaker's CustomAttributes header (pairs separated by ; or ,)."""
    for part in headers.get("x-amzn-sagemaker-custom-attributes", "").replace(",", ";").split(";"):
        key, _, value = part.partition("=")
        if key.strip() == name and value.strip():
            return value.strip()
    return None


def _target_model(headers: dict[str, str]) -> str | None:
    named = _attribute(headers, "model")
    if named:
        return named
    target = headers.get("x-amzn-sagemaker-target-model")
    return target.removesuffix(".tar.gz") if target else None


def _explain(headers: dict[str, str]) -> bool:
    """Whether the request asks for explanations: CustomAttributes explain=true (what the gateway
    sends through InvokeEndpoint), or the header X-Sagegate-Explain: true."""
    value = _attribute(headers, "explain") or headers.get("x-sagegate-explain") or "false"
    if value.lower() not in ("true", "false", "1", "0"):
        raise BadRequest(f"explain must be true or false, not {value!r}", field="explain")
    return value.lower() in ("true", "1")


class InferenceApp:
    """ASGI application; `plane` holds the models, `metrics` what /metrics shows."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = ServerMetrics(config.max_batch_size)
        self.plane: DataPlane | None = None
        self.load_error: str | None = None
        self._loading: asyncio.Task[None] | None = None
        self.on_load_failure: Callable[[str], None] | None = None
        self.oip = OipRoutes(self)
        self.grpc: Any = None  # the gRPC server, when config.grpc_port is set
        self.reuse_port = False  # worker processes share the gRPC port
        self.on_ready: Callable[[], None] | None = None  # a worker marks itself ready
        self.peers_ready: Callable[[], bool] | None = None  # whether every worker is ready

    # -- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = _Request(scope, receive)
        try:
            await self._route(request, send)
        except ServerError as exc:
            await _answer(send, exc.status, orjson.dumps({"error": exc.message, **exc.detail}))
        except ConnectionAbortedError:
            return

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.plane = DataPlane(self.config, self.metrics)
                if self.config.grpc_port:
                    from sagegate.server.oip.grpc import start_grpc

                    try:
                        self.grpc = await start_grpc(self, reuse_port=self.reuse_port)
                    except OSError as exc:
                        self.load_error = str(exc)  # the exit code says so (a worker is not restarted)
                        await send({"type": "lifespan.startup.failed", "message": str(exc)})
                        return
                # Load after the socket is up, so /ping can say 503 while models load.
                self._loading = asyncio.get_running_loop().create_task(self._load())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.grpc is not None:
                    await self.grpc.stop(self.config.request_timeout_s)
                if self._loading is not None and not self._loading.done():
                    self._loading.cancel()
                if self.plane is not None:
                    await self.plane.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _load(self) -> None:
        assert self.plane is not None
        try:
            await self.plane.load_model_dir()
            if self.on_ready is not None:
                self.on_ready()
        except ServerError as exc:
            self._fail(exc.message)
        except Exception as exc:
            log.exception("loading models failed")
            self._fail(f"loading models failed: {exc}")

    def _fail(self, message: str) -> None:
        self.load_error = message
        log.error("%s", message)
        if self.on_load_failure is not None:
            self.on_load_failure(message)

    # -- routes -----------------------------------------------------------------------------

    async def _route(self, request: _Request, send: Send) -> None:
        method, path = request.method, request.path
        if path == "/invocations" and method == "POST":
            await self._invoke(request, send, _target_model(request.headers), "invocations")
        elif path == "/ping" and method == "GET":
            await self._ping(send)
        elif path == "/metrics" and method == "GET":
            await _answer(send, 200, self.metrics.render(), CONTENT_TYPE_LATEST.encode())
        elif path == "/execution-parameters" and method == "GET":
            await _answer(send, 200, orjson.dumps(self._execution_parameters()))
        elif path == "/models":
            if method == "GET":
                await self._list_models(request, send)
            elif method == "POST":
                self._multi_model(method, path)
                await self._load_model(request, send)
            else:
                raise MethodNotAllowed(f"{method} is not allowed on {path}")
        elif path.startswith("/models/"):
            name, _, action = path[len("/models/") :].partition("/")
            if action == "invoke" and method == "POST":
                await self._invoke(request, send, name, "invoke")
            elif not action and method == "GET":
                await _answer(send, 200, orjson.dumps(self._plane().get(name).model.describe()))
            elif not action and method == "DELETE":
                self._multi_model(method, path)
                await self._plane().unload(name)
                await _answer(send, 200, orjson.dumps({"status": f"model {name!r} unloaded"}))
            else:
                raise MethodNotAllowed(f"{method} is not allowed on {path}")
        elif path == "/v2" or path.startswith("/v2/"):
            status, body, content_type, extra = await self.oip.route(request)
            await _answer(send, status, body, content_type, extra)
        else:
            raise RouteNotFound(f"no route {method} {path}")

    def _multi_model(self, method: str, path: str) -> None:
        """Loading and unloading models over HTTP is a multi-model endpoint's API, and only its."""
        if not self.config.multi_model:
            raise RouteNotFound(
                f"no route {method} {path}: loading and unloading models is the multi-model API "
                "(SAGEGATE_MULTI_MODEL=true turns it on)"
            )

    def _plane(self) -> DataPlane:
        if self.plane is None:
            raise ServerError("the server is not started")
        return self.plane

    @property
    def ready(self) -> bool:
        """What /ping's 200 says: every model is loaded, and there is one to answer with."""
        plane = self.plane
        return (
            plane is not None
            and plane.ready
            and bool(plane.models or self.config.multi_model)
            and (self.peers_ready is None or self.peers_ready())
        )

    async def _ping(self, send: Send) -> None:
        plane = self.plane
        if plane is not None and plane.ready and not plane.models and not self.config.multi_model:
            # Every model was unloaded: this container can answer nothing, so it says so.
            await _answer(send, 503, b'{"status":"no model is loaded"}')
        elif plane is not None and plane.ready and (self.peers_ready is None or self.peers_ready()):
            await _answer(send, 200, b'{"status":"healthy"}')
        elif self.load_error:
            await _answer(send, 503, orjson.dumps({"status": "failed", "error": self.load_error}))
        else:
            await _answer(send, 503, b'{"status":"loading"}')

    def _execution_parameters(self) -> dict[str, Any]:
        return {
            "MaxConcurrentTransforms": max(1, (os.cpu_count() or 1) * self.config.batch_workers),
            "BatchStrategy": "MULTI_RECORD",
            "MaxPayloadInMB": min(100, max(1, int(self.config.max_body_mb))),
        }

    async def _invoke(self, request: _Request, send: Send, name: str | None, route: str) -> None:
        started = time.perf_counter()
        plane = self._plane()
        if not plane.ready and not name:
            raise ServiceUnavailable("models are still loading")
        served = plane.resolve(name)
        model = served.model.name
        code = 200
        try:
            body = await request.body(self.config.max_body_bytes)
            content_type = request.headers.get("content-type")
            answer_type = codecs.answer_type(request.headers.get("accept"), content_type)  # a 406 before the model runs
            explain = _explain(request.headers)
            if explain and answer_type == codecs.CSV:
                raise NotAcceptable("explanations are answered as JSON or JSON Lines, not CSV", field="Accept")
            # one numeric block is validated and run as an array (an explanation takes the records' way)
            block = (
                None
                if explain
                else codecs.decode_block(body, content_type, served.model.pipeline, self.config.max_records)
            )
            if block is not None:
                predictions = served.model.postprocess(await plane.predict_block(served, block))
            else:
                rows = codecs.decode(body, content_type, served.model.pipeline, self.config.max_records)
                if explain and served.model.explainer is None:
                    served.model.explain_rows(rows)  # the 400 that says why, before the model runs
                predictions = await plane.predict(served, rows)
                if explain:
                    explanations = await plane.explain(served, rows)
                    predictions = [{**p, "explanation": e} for p, e in zip(predictions, explanations, strict=True)]
            payload, media = codecs.encode(predictions, request.headers.get("accept"), content_type)
            await _answer(send, 200, payload, media.encode(), self._variant_headers(served))
            self.metrics.records_done(model, len(predictions))
        except ServerError as exc:
            code = exc.status
            self.metrics.errors.labels(model, type(exc).__name__).inc()
            raise
        finally:
            self.metrics.request_done(model, route, code, time.perf_counter() - started)

    @staticmethod
    def _variant_headers(served: ServedModel) -> list[tuple[bytes, bytes]]:
        m = served.model.manifest
        return [(b"x-sagegate-model-version", f"{m.name}:{m.version}".encode())]

    async def _list_models(self, request: _Request, send: Send) -> None:
        query = parse_qs(request.query.decode("latin-1"))
        try:
            size = int(query.get("page_size", ["100"])[0])
            start = int(query.get("next_page_token", ["0"])[0] or 0)
        except ValueError:
            raise BadRequest("page_size and next_page_token must be integers") from None
        names = sorted(self._plane().models)
        page = names[start : start + max(1, size)]
        answer: dict[str, Any] = {
            "models": [{"modelName": n, "modelUrl": self._plane().models[n].model.url} for n in page]
        }
        if start + len(page) < len(names):
            answer["nextPageToken"] = str(start + len(page))
        await _answer(send, 200, orjson.dumps(answer))

    def _under_root(self, url: str) -> Path:
        """The package folder `url` names, if it is inside the models root (after `..` and symbolic
        links are resolved); else a refusal that reads the same whether or not the path exists."""
        root = self.config.models_root.resolve()
        path = Path(url.removeprefix("file://"))
        resolved = (path if path.is_absolute() else root / path).resolve()
        if resolved == root or root not in resolved.parents:
            raise BadRequest(f"url must name a model package folder under {root}", field="url")
        return resolved

    async def _load_model(self, request: _Request, send: Send) -> None:
        document = await request.json()
        if not isinstance(document, dict):
            raise BadRequest('expected {"model_name": ..., "url": ...}')
        name, url = document.get("model_name"), document.get("url")
        if not isinstance(name, str) or not name:
            raise BadRequest("model_name is required", field="model_name")
        if not isinstance(url, str) or not url:
            raise BadRequest("url is required", field="url")
        try:
            model = await self._plane().load(name, self._under_root(url))
        except ModelLoadError as exc:
            raise BadRequest(exc.message, model=name) from None
        await _answer(send, 200, orjson.dumps({"status": f"model {name!r} loaded", **model.describe()}))
