"""The state machine definitions in stepfunctions/: retriers expanded, then ${...} placeholders substituted.

A Task in a definition file says `"Retry": "transient"` (or `"cleanup"`). When the definition is
loaded that becomes one retrier (backoff with jitter) over the errors worth retrying *for that task's
integration*: throttling and transient service faults, by the names Step Functions gives them
(`TRANSIENT_ERRORS`). A retrier only matches names the task can raise, so each integration has its
own list; the test suite checks every name against botocore's service models
(tests/aws_rules/test_error_names.py). `cleanup` is for best-effort deletes of what a failed rollout
may never have made: SageMaker answers "not found" with a ValidationException that its model does not
define, so it has the name of a throttle; two quick attempts, then the state's Catch moves on.

How Step Functions names errors, which these lists follow:
- AWS SDK integrations (`arn:aws:states:::aws-sdk:<service>:<action>`): `<Service>.<Error>Exception`, the
  service named by its API model's serviceId without spaces (DynamoDb and Sfn excepted) and the error
  by its modeled shape with an `Exception` suffix added where missing (`SageMaker.ResourceNotFoundException`).
  An error that the service's model does not define (SageMaker's ThrottlingException and
  ValidationException among them) arrives as the service-level `<Service>.<Service>Exception`.
- Optimized integrations keep their own prefixes: `DynamoDB.<ErrorCode>` (unmodeled:
  `DynamoDB.AmazonDynamoDBException`), `SNS.<ErrorCode>Exception`, `Lambda.<Exception>`.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

__all__ = [
    "DEFINITIONS",
    "RETRY_POLICIES",
    "TRANSIENT_ERRORS",
    "definition_text",
    "expand",
    "integration",
    "load_definition",
    "placeholders",
    "tasks",
]

DEFINITIONS = Path(__file__).resolve().parents[2] / "stepfunctions"
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z][A-Za-z0-9]*)\}")

TRANSIENT_ERRORS: dict[str, tuple[str, ...]] = {
    # Throttling, internal failures and validation alike are not in SageMaker's model: one name for all.
    "aws-sdk:sagemaker": ("SageMaker.SageMakerException",),
    "aws-sdk:sagemakerruntime": (
        "SageMakerRuntime.ServiceUnavailableException",
        "SageMakerRuntime.InternalFailureException",
        "SageMakerRuntime.SageMakerRuntimeException",
    ),
    "aws-sdk:cloudwatch": ("CloudWatch.InternalServiceFaultException", "CloudWatch.CloudWatchException"),
    "aws-sdk:s3": ("S3.S3Exception",),
    "aws-sdk:athena": ("Athena.InternalServerException", "Athena.TooManyRequestsException", "Athena.AthenaException"),
    "dynamodb": (
        "DynamoDB.ProvisionedThroughputExceededException",
        "DynamoDB.ThrottlingException",
        "DynamoDB.RequestLimitExceeded",
        "DynamoDB.InternalServerError",
        "DynamoDB.AmazonDynamoDBException",
    ),
    "sns": ("SNS.ThrottledException", "SNS.InternalErrorException", "SNS.KMSThrottlingException"),
    "lambda": (
        "Lambda.TooManyRequestsException",
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
        "Lambda.ClientExecutionTimeoutException",
    ),
}
# transient: at most 2 + 4 + 8 + 16 + 30 s, long enough for throttling to pass, short enough that an
# error which is not transient (an unmodeled SageMaker ValidationException has the same name) fails soon.
RETRY_POLICIES: dict[str, dict[str, Any]] = {
    "transient": {
        "IntervalSeconds": 2,
        "BackoffRate": 2,
        "MaxAttempts": 5,
        "MaxDelaySeconds": 30,
        "JitterStrategy": "FULL",
    },
    "cleanup": {"IntervalSeconds": 1, "BackoffRate": 2, "MaxAttempts": 2, "JitterStrategy": "FULL"},
}


def integration(resource: str) -> str:
    """`aws-sdk:sagemaker` for an SDK task's resource, `dynamodb` for an optimized one."""
    tail = resource.removeprefix("arn:aws:states:::")
    service = tail.split(":")[:2] if tail.startswith("aws-sdk:") else tail.split(":")[:1]
    return ":".join(service).split(".")[0]


def tasks(states: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every Task state, nested ones (Map, Parallel) included, with its name."""
    found = []
    for name, state in states.items():
        if state.get("Type") == "Task":
            found.append((name, state))
        for inner in (state.get("ItemProcessor"), state.get("Iterator"), *state.get("Branches", [])):
            if inner:
                found.extend(tasks(inner["States"]))
    return found


def expand(definition: dict[str, Any]) -> dict[str, Any]:
    """The definition with every `"Retry": "<policy>"` replaced by its integration's retrier."""
    expanded = copy.deepcopy(definition)
    for name, task in tasks(expanded["States"]):
        policy = task.get("Retry")
        if not isinstance(policy, str):
            continue
        if policy not in RETRY_POLICIES:
            raise ValueError(f"{name}: unknown retry policy {policy!r}")
        kind = integration(task["Resource"])
        if kind not in TRANSIENT_ERRORS:
            raise KeyError(f"{name}: no transient errors are known for {kind} ({task['Resource']})")
        task["Retry"] = [{"ErrorEquals": list(TRANSIENT_ERRORS[kind]), **RETRY_POLICIES[policy]}]
    return expanded


def placeholders(name: str) -> set[str]:
    return set(_PLACEHOLDER.findall((DEFINITIONS / f"{name}.asl.json").read_text()))


def definition_text(name: str) -> str:
    """The ASL of `name` as Step Functions gets it, ${...} placeholders still in it (CDK substitutes them)."""
    return json.dumps(expand(json.loads((DEFINITIONS / f"{name}.asl.json").read_text())), separators=(",", ":"))


def load_definition(name: str, substitutions: dict[str, str]) -> str:
    """The ASL of `name` with every placeholder replaced; an unknown or missing one is an error."""
    missing = placeholders(name) - set(substitutions)
    if missing:
        raise KeyError(f"{name}: no value for {', '.join(sorted(missing))}")
    unknown = set(substitutions) - placeholders(name)
    if unknown:
        raise KeyError(f"{name}: {', '.join(sorted(unknown))} is not a placeholder of this definition")
    text = _PLACEHOLDER.sub(lambda m: substitutions[m.group(1)], definition_text(name))
    json.loads(text)  # still valid JSON after substitution
    return text
