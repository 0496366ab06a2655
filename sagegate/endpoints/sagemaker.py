"""EndpointClient over boto3's sagemaker-runtime InvokeEndpoint, with explicit timeouts and retries."""

from __future__ import annotations

from typing import Any

from sagegate.endpoints.protocol import EndpointRejected, EndpointResponse, EndpointUnavailable

__all__ = ["SageMakerEndpointClient", "runtime_client"]


def runtime_client(
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    connect_timeout: float = 1.0,
    read_timeout: float = 5.0,
    max_attempts: int = 2,
    session: Any | None = None,
) -> Any:
    """A sagemaker-runtime client whose slowest failure is bounded: the gateway has a budget too.

    Made with botocore directly: boto3 adds nothing for one client, and its import (s3transfer)
    costs the Lambda's cold start. `session`: a botocore session to share (one per process)."""
    from botocore.config import Config
    from botocore.session import get_session

    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        tcp_keepalive=True,
        retries={"max_attempts": max_attempts, "mode": "standard"},
    )
    return (session or get_session()).create_client(
        "sagemaker-runtime", region_name=region, endpoint_url=endpoint_url, config=config
    )


class SageMakerEndpointClient:
    def __init__(self, client: Any) -> None:
        self._client = client

    def invoke(
        self,
        endpoint: str,
        body: bytes,
        *,
        content_type: str = "application/json",
        accept: str = "application/json",
        target_variant: str | None = None,
        inference_id: str | None = None,
        custom_attributes: str | None = None,
    ) -> EndpointResponse:
        from botocore.exceptions import BotoCoreError, ClientError

        request: dict[str, Any] = {
            "EndpointName": endpoint,
            "Body": body,
            "ContentType": content_type,
            "Accept": accept,
        }
        if target_variant:
            request["TargetVariant"] = target_variant
        if inference_id:
            request["InferenceId"] = inference_id
        if custom_attributes:
            request["CustomAttributes"] = custom_attributes
        try:
            answer = self._client.invoke_endpoint(**request)
        except ClientError as exc:
            raise _classify(exc) from exc
        except BotoCoreError as exc:  # timeouts, connection errors
            raise EndpointUnavailable(f"endpoint {endpoint!r}: {exc}") from exc
        return EndpointResponse(
            body=answer["Body"].read(),
            content_type=answer.get("ContentType", accept),
            invoked_variant=answer.get("InvokedProductionVariant"),
            custom_attributes=answer.get("CustomAttributes"),
        )


def _classify(exc: Any) -> Exception:
    error = exc.response.get("Error", {})
    code, message = error.get("Code", "Unknown"), error.get("Message", str(exc))
    original = exc.response.get("OriginalStatusCode")
    if code == "ModelError" and isinstance(original, int) and 400 <= original < 500:
        return EndpointRejected(exc.response.get("OriginalMessage") or message, status=original)
    return EndpointUnavailable(f"{code}: {message}")
