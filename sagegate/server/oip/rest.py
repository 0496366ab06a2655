"""OIP v2 REST (`/v2/...`) on the server's port: parses, delegates to `inference`, answers.

JSON tensors and the binary tensor data extension: a body whose first
`Inference-Header-Content-Length` bytes are the JSON request, followed by the raw data of every
input whose parameters give a `binary_data_size`, in the order of the inputs. Outputs go as binary
data when asked (`binary_data` per output, `binary_data_output` for all), after the JSON header.
Errors answer `{"error": "..."}` with the data plane's status (400, 404, 413, 503).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from sagegate.server.codecs import load_json
from sagegate.server.dataplane import ServedModel
from sagegate.server.exceptions import BadRequest, MethodNotAllowed, RouteNotFound, ServerError
from sagegate.server.oip import inference
from sagegate.server.oip.inference import InferRequest, InferResponse, RequestedOutput
from sagegate.server.oip.tensors import Tensor, from_data, from_raw, to_raw, wire_data

if TYPE_CHECKING:
    from sagegate.server.app import InferenceApp

__all__ = ["HEADER_LENGTH", "OipRoutes", "decode_request", "encode_response"]

log = logging.getLogger("sagegate.server")

HEADER_LENGTH = "inference-header-content-length"
_JSON = b"application/json"
_BINARY = b"application/octet-stream"

Answer = tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]


class _Request(Protocol):
    method: str
    path: str
    headers: dict[str, str]

    async def body(self, limit: int) -> bytes: ...


def _json(status: int, document: Any) -> Answer:
    return status, orjson.dumps(document), _JSON, []


class OipRoutes:
    """The /v2 routes of an `InferenceApp` (its data plane, settings, readiness and metrics)."""

    def __init__(self, app: InferenceApp) -> None:
        self.app = app

    async def route(self, request: _Request) -> Answer:
        try:
            return await self._route(request)
        except (ServerError, ConnectionAbortedError):
            raise
        except Exception as exc:  # a bug of ours: still OIP's error shape, and logged
            log.exception("%s %s failed", request.method, request.path)
            raise ServerError(f"internal error: {type(exc).__name__}") from None

    async def _route(self, request: _Request) -> Answer:
        method, parts = request.method, request.path.rstrip("/").split("/")[2:]
        if parts and parts[0] == "models" and len(parts) >= 2:
            name, rest = parts[1], parts[2:]
            version = None
            if rest[:1] == ["versions"] and len(rest) >= 2:
                version, rest = rest[1], rest[2:]
            if rest == ["infer"]:
                _allow(method, "POST", request.path)
                return await self._infer(request, name, version)
            _allow(method, "GET", request.path)
            if not rest:
                return _json(200, inference.model_metadata(self._resolve(name, version)))
            if rest == ["ready"]:
                self._resolve(name, version)
                return _json(200, {"name": name, "ready": True})
        elif method == "GET" and not parts:
            return _json(200, inference.server_metadata())
        elif method == "GET" and parts == ["health", "live"]:
            return _json(200, {"live": True})
        elif method == "GET" and parts == ["health", "ready"]:
            ready = self.app.ready
            return _json(200 if ready else 503, {"ready": ready})
        raise RouteNotFound(f"no route {method} {request.path}")

    def _resolve(self, name: str, version: str | None) -> ServedModel:
        return inference.resolve(self.app._plane(), name, version)

    async def _infer(self, request: _Request, name: str, version: str | None) -> Answer:
        started = time.perf_counter()
        served = self._resolve(name, version)
        metrics, code = self.app.metrics, 200
        try:
            body = await request.body(self.app.config.max_body_bytes)
            decoded = decode_request(body, request.headers.get(HEADER_LENGTH))
            response = await inference.infer(self.app._plane(), served, decoded, self.app.config.max_records)
            payload, length = encode_response(response)
            metrics.records_done(name, response.outputs[0][0].shape[0] if response.outputs else 0)
        except ServerError as exc:
            code = exc.status
            metrics.errors.labels(name, type(exc).__name__).inc()
            raise
        finally:
            metrics.request_done(name, "v2-infer", code, time.perf_counter() - started)
        if length is None:
            return 200, payload, _JSON, []
        return 200, payload, _BINARY, [(HEADER_LENGTH.encode(), str(length).encode())]


def _allow(method: str, allowed: str, path: str) -> None:
    if method != allowed:
        raise MethodNotAllowed(f"{method} is not allowed on {path}")


def decode_request(body: bytes, header_length: str | None) -> InferRequest:
    view = memoryview(body)
    if header_length is not None:
        if not header_length.strip().isdigit() or int(header_length) > len(body):
            raise BadRequest(
                f"Inference-Header-Content-Length {header_length!r} must be a byte count within the body "
                f"({len(body)} bytes)"
            )
        header_size = int(header_length)
        document, binary = load_json(body[:header_size]), view[header_size:]
    else:
        document, binary = load_json(body), view[len(body) :]
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list):
        raise BadRequest('expected {"inputs": [{"name", "datatype", "shape", "data"}, ...]}')
    at = 0
    inputs: list[Tensor] = []
    for position, spec in enumerate(document["inputs"]):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise BadRequest(f"input {position} must be an object with a name")
        name = spec["name"]
        parameters = _parameters(spec, f"input {name!r}")
        size = parameters.get("binary_data_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0 or at + size > len(binary):
                raise BadRequest(
                    f"input {name!r}: binary_data_size {size!r} runs past the {len(binary)} bytes of binary data"
                )
            inputs.append(from_raw(name, spec.get("datatype"), spec.get("shape"), binary[at : at + size]))
            at += size
        elif "data" in spec:
            inputs.append(from_data(name, spec.get("datatype"), spec.get("shape"), spec["data"]))
        else:
            raise BadRequest(f"input {name!r} has neither data nor a binary_data_size")
    if at != len(binary):
        raise BadRequest(f"{len(binary) - at} bytes of binary data belong to no input")
    outputs = []
    for spec in document.get("outputs") or []:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise BadRequest("each requested output must be an object with a name")
        binary_data = _parameters(spec, f"output {spec['name']!r}").get("binary_data")
        outputs.append(RequestedOutput(spec["name"], None if binary_data is None else bool(binary_data)))
    request_id = document.get("id")
    return InferRequest(
        inputs=inputs,
        outputs=outputs,
        id=request_id if isinstance(request_id, str) else None,
        binary_output=bool(_parameters(document, "the request").get("binary_data_output", False)),
    )


def _parameters(spec: dict[str, Any], what: str) -> dict[str, Any]:
    parameters = spec.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest(f"{what}: parameters must be an object")
    return parameters


def encode_response(response: InferResponse) -> tuple[bytes, int | None]:
    """The body, and the JSON header's length when binary data follows it."""
    outputs: list[dict[str, Any]] = []
    raw: list[bytes] = []
    for tensor, binary in response.outputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if binary:
            data = to_raw(tensor)
            entry["parameters"] = {"binary_data_size": len(data)}
            raw.append(data)
        else:
            entry["data"] = wire_data(tensor)
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id is not None:
        document["id"] = response.id
    document["outputs"] = outputs
    header = orjson.dumps(document)
    if not raw:
        return header, None
    return b"".join([header, *raw]), len(header)
