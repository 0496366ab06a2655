"""A client of the prediction API: the local stack's gateway, or an environment's API Gateway URL
(with an API key, or SigV4-signed with the caller's AWS credentials)."""

from __future__ import annotations

import json
from typing import Any

import httpx

__all__ = ["ApiError", "GatewayClient", "gateway_for"]


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class GatewayClient:
    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        sigv4_region: str | None = None,
        timeout: float = 30.0,
        connections: int = 16,
    ) -> None:
        self.url = url.rstrip("/")
        self._api_key = api_key
        self._region = sigv4_region
        self._http = httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=connections))

    def close(self) -> None:
        self._http.close()

    def _headers(self, method: str, url: str, body: bytes) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        elif self._region:
            from botocore.auth import SigV4Auth
            from botocore.awsrequest import AWSRequest
            from botocore.session import get_session

            credentials = get_session().get_credentials()
            if credentials is None:
                raise ApiError(401, "no AWS credentials to sign the request with (or give an API key)")
            request = AWSRequest(method=method, url=url, data=body, headers=headers)
            SigV4Auth(credentials.get_frozen_credentials(), "execute-api", self._region).add_auth(request)
            headers = dict(request.headers.items())
        return headers

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        url = self.url + path
        body = json.dumps(payload).encode() if payload is not None else b""
        try:
            answer = self._http.request(method, url, content=body or None, headers=self._headers(method, url, body))
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach {self.url}: {exc}") from None
        if answer.status_code >= 400:
            try:
                message = answer.json().get("error") or answer.text
            except ValueError:
                message = answer.text
            raise ApiError(answer.status_code, str(message)[:500])
        return answer.json()

    def predict(
        self,
        model: str,
        features: dict[str, Any],
        *,
        user_id: str | None = None,
        version: str | None = None,
        explain: bool = False,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": model, "features": features}
        if user_id:
            payload["user_id"] = user_id
        if version:
            payload["version"] = version
        result: dict[str, Any] = self._call("POST", "/v1/explain" if explain else "/v1/predict", payload)
        return result

    def model(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/v1/models/{name}")
        return result


def gateway_for(
    target_name: str | None, *, url: str | None = None, api_key: str | None = None, connections: int = 16
) -> GatewayClient:
    """The API of a target: the running local stack's gateway, or the environment's API URL."""
    from sagegate.local.stack import StackPaths, read_status
    from sagegate.registry import RegistryError
    from sagegate.targets import resolve_target, state_dir

    if url:
        return GatewayClient(url, api_key=api_key, connections=connections)
    target = resolve_target(target_name)
    if target.kind == "local":
        status = read_status(StackPaths(state_dir()))
        if status is None or not status.get("gateway_url"):
            raise RegistryError("the local stack is not running: start it with `sagegate dev` (or give --url)")
        return GatewayClient(status["gateway_url"], connections=connections)
    if not target.api_url:
        raise RegistryError(f"target {target.name!r} has no api_url")
    return GatewayClient(
        target.api_url, api_key=api_key, sigv4_region=None if api_key else target.region, connections=connections
    )
