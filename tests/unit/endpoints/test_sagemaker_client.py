"""SageMakerEndpointClient with botocore's Stubber: the request shape and the error mapping.

What this cannot prove: that SageMaker itself answers this way. The shapes come from botocore's
service model, which Stubber validates every stubbed request and response against; the emulator
test (tests/integration/test_emulator.py) runs the same client against a real HTTP server.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from sagegate.endpoints import EndpointRejected, EndpointUnavailable
from sagegate.endpoints.sagemaker import SageMakerEndpointClient, runtime_client


@pytest.fixture
def stubbed() -> Iterator[tuple[SageMakerEndpointClient, Stubber]]:
    client = runtime_client(region="eu-west-1")
    with Stubber(client) as stubber:
        yield SageMakerEndpointClient(client), stubber
        stubber.assert_no_pending_responses()


def test_invoke_sends_variant_inference_id_and_attributes(stubbed: tuple[SageMakerEndpointClient, Stubber]) -> None:
    client, stubber = stubbed
    answer = b'{"predictions": [{"prediction": 0.9}]}'
    stubber.add_response(
        "invoke_endpoint",
        {
            "Body": StreamingBody(io.BytesIO(answer), len(answer)),
            "ContentType": "application/json",
            "InvokedProductionVariant": "v2",
            "CustomAttributes": "model=fraud",
        },
        {
            "EndpointName": "fraud-prod",
            "Body": b'{"features": {}}',
            "ContentType": "application/json",
            "Accept": "application/json",
            "TargetVariant": "v2",
            "InferenceId": "p-1",
            "CustomAttributes": "model=fraud",
        },
    )
    response = client.invoke(
        "fraud-prod", b'{"features": {}}', target_variant="v2", inference_id="p-1", custom_attributes="model=fraud"
    )
    assert (response.body, response.invoked_variant, response.custom_attributes) == (answer, "v2", "model=fraud")


@pytest.mark.parametrize(
    ("code", "status", "fields", "error", "message"),
    [
        (
            "ModelError",
            424,
            {"OriginalStatusCode": 400, "OriginalMessage": "record 0, field 'hour'"},
            EndpointRejected,
            "field 'hour'",
        ),
        ("ModelError", 424, {"OriginalStatusCode": 500, "OriginalMessage": "boom"}, EndpointUnavailable, "ModelError"),
        ("ThrottlingException", 400, {}, EndpointUnavailable, "ThrottlingException"),
        ("ServiceUnavailable", 503, {}, EndpointUnavailable, "ServiceUnavailable"),
        ("ValidationError", 400, {}, EndpointUnavailable, "ValidationError"),
    ],
)
def test_errors_are_classified(
    stubbed: tuple[SageMakerEndpointClient, Stubber],
    code: str,
    status: int,
    fields: dict[str, object],
    error: type[Exception],
    message: str,
) -> None:
    client, stubber = stubbed
    stubber.add_client_error(
        "invoke_endpoint",
        service_error_code=code,
        service_message="nope",
        http_status_code=status,
        modeled_fields=fields or None,
    )
    with pytest.raises(error, match=message):
        client.invoke("fraud-prod", b"{}")


def test_a_silent_endpoint_times_out_as_unavailable(silent_port: int) -> None:
    url = f"http://127.0.0.1:{silent_port}"
    client = SageMakerEndpointClient(
        runtime_client(region="eu-west-1", endpoint_url=url, read_timeout=0.3, max_attempts=1)
    )
    with pytest.raises(EndpointUnavailable, match="Read timeout"):
        client.invoke("fraud-prod", b"{}")
