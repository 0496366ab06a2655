"""A local SageMaker runtime: `POST /endpoints/{name}/invocations` in front of local server processes.

boto3's sagemaker-runtime client, given this emulator's URL as endpoint_url, cannot tell it from
SageMaker for what the gateway uses: TargetVariant routing (X-Amzn-SageMaker-Target-Variant),
weighted variants, the X-Amzn-Invoked-Production-Variant answer header, CustomAttributes, and
SageMaker-shaped errors (ModelError 424 with the container's status and message, ValidationError
400, ServiceUnavailable 503). The gateway's code is therefore the same here and in AWS.

Endpoints are configured at start and changed at run time (a local deployment moves weights)
through `PUT /_sagegate/endpoints/{name}`; each change is also written back to the `--config`
file, so an emulator restarted by the supervisor comes back with the endpoints it had.

It is a thin proxy: one aiohttp session whose pool is bounded per model server (a hung server
holds only its own connections), the body passed through as bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["EmulatedEndpoint", "RuntimeEmulator", "VariantTarget"]

_FORWARDED = ("content-type", "accept", "x-amzn-sagemaker-custom-attributes", "x-amzn-sagemaker-inference-id")


class VariantTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    url: str = Field(description="base URL of the inference server process")
    weight: float = Field(default=1.0, ge=0)
    model: str | None = Field(default=None, description="model on a multi-model server (else /invocations)")
    shadow: bool = Field(default=False, description="gets a copy of each request; its answers are discarded")


class EmulatedEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    variants: list[VariantTarget] = Field(min_length=1)


def _error(status: int, code: str, message: str, **fields: Any) -> Response:
    body = orjson.dumps({"Message": message, "message": message, **fields})
    return Response(body, status, media_type="application/json", headers={"x-amzn-ErrorType": f"{code}:"})


class RuntimeEmulator:
    def __init__(
        self,
        endpoints: list[EmulatedEndpoint] | None = None,
        *,
        timeout: float = 60.0,
        rng: random.Random | None = None,
        config: Path | None = None,
        per_server_connections: int = 128,
    ) -> None:
        self.endpoints = {e.name: e for e in endpoints or []}
        self._rng = rng or random.Random()
        self._timeout = timeout
        self._config = config
        self._per_server = per_server_connections
        self._http: aiohttp.ClientSession | None = None
        self._mirrors: set[asyncio.Task[None]] = set()
        self.app = Starlette(
            routes=[
                Route("/endpoints/{name}/invocations", self.invoke, methods=["POST"]),
                Route("/_sagegate/endpoints", self.list_endpoints, methods=["GET"]),
                Route("/_sagegate/endpoints/{name}", self.put_endpoint, methods=["PUT"]),
                Route("/_sagegate/endpoints/{name}", self.delete_endpoint, methods=["DELETE"]),
                Route("/ping", lambda request: Response(b'{"status":"healthy"}', media_type="application/json")),
            ],
            lifespan=self._lifespan,
        )

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # SageMaker gives a container 60 s to answer; the pool is bounded per model server.
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=self._per_server)
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as client:
            self._http = client
            yield
        self._http = None

    def pick(self, endpoint: EmulatedEndpoint, target: str | None) -> VariantTarget | None:
        if target:
            return next((v for v in endpoint.variants if v.name == target), None)
        live = [v for v in endpoint.variants if v.weight > 0 and not v.shadow]
        if not live:
            return None
        return self._rng.choices(live, weights=[v.weight for v in live])[0]

    async def invoke(self, request: Request) -> Response:
        name = request.path_params["name"]
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            return _error(400, "ValidationError", f"Endpoint {name} not found.")
        target = request.headers.get("x-amzn-sagemaker-target-variant")
        variant = self.pick(endpoint, target)
        if variant is None:
            reason = (
                f"Variant {target} not found for endpoint {name}."
                if target
                else f"Endpoint {name} has no variant with traffic."
            )
            return _error(400, "ValidationError", reason)
        path = f"/models/{variant.model}/invoke" if variant.model else "/invocations"
        headers = {k: v for k, v in request.headers.items() if k in _FORWARDED}
        assert self._http is not None, "the emulator is not started"
        body = await request.body()
        try:
            async with self._http.post(variant.url.rstrip("/") + path, data=body, headers=headers) as answer:
                content = await answer.read()
                status, answer_headers = answer.status, answer.headers
        except TimeoutError:
            return _error(
                424,
                "ModelError",
                f'Received timeout from primary with message "" (variant {variant.name})',
                OriginalStatusCode=504,
                OriginalMessage="timeout",
            )
        except aiohttp.ClientError as exc:
            return _error(503, "ServiceUnavailable", f"variant {variant.name} of {name} is unreachable: {exc}")
        if status >= 400:
            original = content.decode(errors="replace")
            return _error(
                424,
                "ModelError",
                f'Received client error ({status}) from primary with message "{original}".',
                OriginalStatusCode=status,
                OriginalMessage=original,
            )
        for shadow in (v for v in endpoint.variants if v.shadow and v is not variant):
            # As SageMaker does with shadow variants: a copy of the request, the answer discarded.
            task = asyncio.create_task(self._mirror(shadow, body, headers))
            self._mirrors.add(task)
            task.add_done_callback(self._mirrors.discard)
        out_headers = {"x-amzn-invoked-production-variant": variant.name}
        if "x-amzn-sagemaker-custom-attributes" in answer_headers:
            out_headers["x-amzn-sagemaker-custom-attributes"] = answer_headers["x-amzn-sagemaker-custom-attributes"]
        return Response(content, 200, media_type=answer_headers.get("content-type"), headers=out_headers)

    async def _mirror(self, shadow: VariantTarget, body: bytes, headers: dict[str, str]) -> None:
        path = f"/models/{shadow.model}/invoke" if shadow.model else "/invocations"
        assert self._http is not None
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):  # a failing shadow never affects the answer
            async with self._http.post(shadow.url.rstrip("/") + path, data=body, headers=headers) as answer:
                await answer.read()

    async def list_endpoints(self, request: Request) -> Response:
        body = [e.model_dump() for e in self.endpoints.values()]
        return Response(orjson.dumps({"endpoints": body}), media_type="application/json")

    async def put_endpoint(self, request: Request) -> Response:
        try:
            endpoint = EmulatedEndpoint.model_validate(
                {**orjson.loads(await request.body()), "name": request.path_params["name"]}
            )
        except (orjson.JSONDecodeError, ValidationError, TypeError) as exc:
            return Response(orjson.dumps({"error": str(exc).splitlines()[0]}), 400, media_type="application/json")
        self.endpoints[endpoint.name] = endpoint
        self._save()
        return Response(endpoint.model_dump_json(), media_type="application/json")

    async def delete_endpoint(self, request: Request) -> Response:
        removed = self.endpoints.pop(request.path_params["name"], None)
        self._save()
        return Response(status_code=204 if removed else 404)

    def _save(self) -> None:
        """The endpoints as they are now, where a restarted emulator reads them (atomically)."""
        if self._config is None:
            return
        tmp = self._config.with_name(self._config.name + ".tmp")
        tmp.write_bytes(orjson.dumps([e.model_dump() for e in self.endpoints.values()]))
        os.replace(tmp, self._config)


def main() -> None:
    """`python -m sagegate.local.emulator --port 8001 --config endpoints.json`."""
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(description="the local SageMaker runtime emulator")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--config", type=Path, help="JSON list of endpoints: [{name, variants: [...]}]")
    args = parser.parse_args()
    endpoints = (
        [EmulatedEndpoint.model_validate(e) for e in orjson.loads(args.config.read_bytes())]
        if args.config and args.config.exists()
        else []
    )
    emulator = RuntimeEmulator(endpoints, config=args.config)
    uvicorn.run(emulator.app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
