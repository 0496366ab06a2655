"""Lambda entry point of the prediction API: Mangum around the FastAPI app, nothing clever.

Everything heavy is created once per execution environment, at module scope: the app and its
clients (Redis, sagemaker-runtime, Firehose). Lifespan is off: Mangum would otherwise run it on
every invocation. X-Ray tracing (Powertools Tracer) is set up only where it is on: importing the
X-Ray SDK costs the cold start about 100-180 ms, so environments choose it in their settings.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger
from mangum import Mangum

from sagegate.gateway.app import create_app, get_predictor

logger = Logger(service="sagegate-gateway")
app = create_app()
predictor = get_predictor()  # the clients, now rather than on the first request
asgi = Mangum(app, lifespan="off")


def _traced(function: Callable[..., Any]) -> Callable[..., Any]:
    if os.environ.get("POWERTOOLS_TRACE_DISABLED", "").lower() in ("1", "true") or not os.environ.get(
        "AWS_LAMBDA_FUNCTION_NAME"
    ):
        return function
    from aws_lambda_powertools import Tracer

    traced: Callable[..., Any] = Tracer(service="sagegate-gateway").capture_lambda_handler(capture_response=False)(
        function
    )
    return traced


@logger.inject_lambda_context(clear_state=True)
@_traced
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    response: dict[str, Any] = asgi(event, context)
    return response
