"""Which error names a Task state can ever see, read from botocore's service models.

Step Functions names errors as follows (AWS Step Functions Developer Guide, "AWS SDK service
integrations" and "Error handling"; the service-name bindings are LocalStack's, whose Step Functions
is checked against AWS by snapshot tests):
- AWS SDK integrations: `<Service>.<Shape>Exception` for each error shape the service's API model
  defines (the `Exception` suffix added where the shape lacks it: `S3.BucketAlreadyExistsException`),
  and `<Service>.<Service>Exception` for every error the model does not define. `<Service>` is the
  model's serviceId without spaces, except DynamoDb and Sfn.
- The optimized DynamoDB integration: `DynamoDB.<error code>`, else `DynamoDB.AmazonDynamoDBException`.
- The optimized SNS integration: `SNS.<error code>` with the `Exception` suffix added where missing.
- The optimized Lambda integration: the Lambda API's own error shapes, and the three client-side names
  of the Lambda service-integration docs (AWSLambdaException, SdkClientException,
  ClientExecutionTimeoutException); a function's own errors by their errorType.
- `States.*`: the names of the Amazon States Language spec and the Step Functions guide.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from functools import cache
from typing import Any

import botocore.session

import sagegate.workflows as workflows_package
from sagegate.workflows.definitions import tasks

STATES_ERRORS = frozenset(
    f"States.{name}"
    for name in (
        "ALL",
        "BranchFailed",
        "DataLimitExceeded",
        "ExceedToleratedFailureThreshold",
        "HeartbeatTimeout",
        "Http.Socket",
        "IntrinsicFailure",
        "ItemReaderFailed",
        "NoChoiceMatched",
        "ParameterPathFailure",
        "Permissions",
        "QueryEvaluationError",
        "ResultPathMatchFailure",
        "ResultWriterFailed",
        "Runtime",
        "TaskFailed",
        "Timeout",
    )
)
_SDK_ERROR_PREFIX = {"dynamodb": "DynamoDb", "sfn": "Sfn"}
_LAMBDA_CLIENT_ERRORS = ("AWSLambdaException", "SdkClientException", "ClientExecutionTimeoutException")


@cache
def _session() -> Any:
    return botocore.session.get_session()


@cache
def botocore_service(sfn_service: str) -> str:
    """botocore's name for a service as an SDK task's resource names it (`sagemakerruntime`)."""
    for name in _session().get_available_services():
        if name.replace("-", "") == sfn_service:
            return str(name)
    raise KeyError(f"no botocore service is called {sfn_service!r} by Step Functions")


def _suffixed(name: str) -> str:
    return name if name.endswith("Exception") else f"{name}Exception"


def _error_shapes(service: str) -> list[Any]:
    model = _session().get_service_model(service)
    shapes = {s.name: s for op in model.operation_names for s in model.operation_model(op).error_shapes}
    return list(shapes.values())


@cache
def task_errors(resource: str) -> frozenset[str]:
    """Every name a Task with this Resource can fail with (States.* excluded)."""
    tail = resource.removeprefix("arn:aws:states:::")
    if tail.startswith("aws-sdk:"):
        sfn_service = tail.split(":")[1]
        service = botocore_service(sfn_service)
        model = _session().get_service_model(service)
        prefix = _SDK_ERROR_PREFIX.get(sfn_service, model.service_id.replace(" ", ""))
        names = {f"{prefix}.{_suffixed(s.name)}" for s in _error_shapes(service)}
        return frozenset({*names, f"{prefix}.{prefix}Exception"})
    service = tail.split(":")[0]
    if service == "dynamodb":
        codes = {s.metadata.get("error", {}).get("code") or s.name for s in _error_shapes("dynamodb")}
        return frozenset({*(f"DynamoDB.{c}" for c in codes), "DynamoDB.AmazonDynamoDBException"})
    if service == "sns":
        codes = {s.metadata.get("error", {}).get("code") or s.name for s in _error_shapes("sns")}
        return frozenset(f"SNS.{_suffixed(c)}" for c in codes)
    if service == "lambda":
        names = {s.name for s in _error_shapes("lambda")} | set(_LAMBDA_CLIENT_ERRORS)
        return frozenset({*(f"Lambda.{n}" for n in names), *function_errors()})
    raise KeyError(f"no error rules for the integration of {resource}")


@cache
def function_errors() -> frozenset[str]:
    """The errorType names the workflows' own Lambda raises: exception classes of sagegate.workflows."""
    names: set[str] = set()
    for info in pkgutil.walk_packages(workflows_package.__path__, f"{workflows_package.__name__}."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Exception) and cls.__module__ == module.__name__:
                names.add(cls.__name__)
    return frozenset(names)


def fail_errors(states: dict[str, Any]) -> set[str]:
    """The Error of every Fail state among these states and the states nested in them."""
    found: set[str] = set()
    for state in states.values():
        if state.get("Type") == "Fail" and "Error" in state:
            found.add(state["Error"])
        for inner in (state.get("ItemProcessor"), state.get("Iterator"), *state.get("Branches", [])):
            if inner:
                found |= fail_errors(inner["States"])
    return found


def allowed(state: dict[str, Any]) -> frozenset[str]:
    """The names a Retry or Catch of this state may match."""
    if state["Type"] == "Task":
        return STATES_ERRORS | task_errors(state["Resource"])
    inner = [state.get("ItemProcessor"), state.get("Iterator"), *state.get("Branches", [])]
    names: set[str] = set()
    for scope in inner:
        if scope:
            names |= fail_errors(scope["States"])
            for _, task in tasks(scope["States"]):
                names |= task_errors(task["Resource"])
    return STATES_ERRORS | names
