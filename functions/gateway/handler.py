"""Lambda entry point of the prediction API: Mangum around the FastAPI app, nothing clever.

Everything heavy is created once per execution environment, at module scope: the app and, on the
first request, its clients (cached dependencies). Lifespan is off: Mangum would otherwise run it on
every invocation.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Tracer
from mangum import Mangum

from sagegate.gateway.app import create_app, get_predictor

logger = Logger(service="sagegate-gateway")
tracer = Tracer(service="sagegate-gateway")
app = create_app()
asgi = Mangum(app, lifespan="off")


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    response: dict[str, Any] = asgi(event, context)
    return response


def warm() -> None:
    """Builds the clients now rather than on the first request (provisioned concurrency calls this)."""
    get_predictor()
