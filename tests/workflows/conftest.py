"""The state machines of a synthesized environment, executed by moto's Step Functions in a moto account
built from the same template (tests/aws_rules/account.py): the resources have the names
CloudFormation would give them, the definitions are the synthesized ones with their substitutions,
and every AWS call is recorded by the role that makes it. At the end of each test every call is
checked against that role's synthesized policies and against botocore's model of the request.

What moto cannot do is filled in here, and what each stand-in cannot prove is said:
- moto has no UpdateEndpoint: `_update_endpoint` swaps the endpoint's config at once (InService),
  keeping the weights of variants that stay, or fails the way SageMaker does (the endpoint stays
  InService on its old config), including SageMaker's refusal to remove a variant that is still a
  scalable target of Application Auto Scaling. It cannot prove SageMaker's timings, the blue/green
  traffic shifting of `replace`, or capacity errors; the request's shape is asserted instead.
- moto runs Lambda tasks only in Docker (not on this machine): the Lambda integration calls
  `sagegate.workflows.deploy.handle` in process with the same payload and the function's own
  environment from the template. This proves the contract between the states and the code, not the
  Lambda's packaging (tests/infra/test_bundle.py builds and runs that).
- moto's SDK integration knows boto3's service names, not Step Functions' `sagemakerruntime`: it is
  mapped to `sagemaker-runtime`, and the response body read into a string, as Step Functions does.
- moto's UpdateModelPackage clears the approval status and replaces the metadata when a request
  leaves them out; SageMaker keeps the status and merges the metadata (`_update_model_package`).
- moto checks instance types against its own, older list (no ml.c6i): botocore's enum of the
  service's model, AWS's own list, is used instead.
- A retrier's backoff is slept at 1/100 of its length (the intervals are kept in `retry_waits`): the
  retries and their number are what a test proves, not how long AWS waits.
- moto names the errors of SDK integrations by the API name: they are named here as AWS does
  (`SageMaker.SageMakerException`, see sagegate/workflows/definitions.py), so retriers can be tested.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.config import Config
from moto import mock_aws
from moto.applicationautoscaling.models import applicationautoscaling_backends
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import FakeEndpointConfig, sagemaker_backends
from moto.sagemaker.responses import SageMakerResponse
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
    state_task_service_aws_sdk,
    state_task_service_dynamodb,
    state_task_service_sns,
)

from sagegate.workflows.deploy import handle
from tests.aws_rules.account import Recorder, build_account
from tests.aws_rules.template import Deployed, synthesized

SCALING_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
# How Step Functions names the services of SDK integrations in errors (LocalStack's bindings, checked
# against AWS): moto uses the raw API name instead.
_SDK_ERROR_NAMES = {
    "sagemaker": "SageMaker",
    "sagemakerruntime": "SageMakerRuntime",
    "cloudwatch": "CloudWatch",
    "athena": "Athena",
}


class Failures:
    """Faults a test injects: a reason makes the next UpdateEndpoint fail; operation -> count of
    throttles still to answer."""

    update_endpoint: str | None = None
    throttle: dict[str, int] = {}


def _instance_types() -> set[str]:
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return set(model.shape_for("ProductionVariantInstanceType").enum)


def _validate_instance_type(self: Any, instance_type: str) -> None:
    if instance_type not in _instance_types():
        raise ValidationError(message=f"Value '{instance_type}' at 'instanceType' failed to satisfy constraint")


def _update_model_package(
    self: Any,
    model_package_arn: str,
    model_approval_status: str | None,
    approval_description: str | None,
    customer_metadata_properties: dict[str, str] | None,
    customer_metadata_properties_to_remove: list[str],
    additional_inference_specifications_to_add: list[Any] | None,
) -> str:
    package = self.model_packages[self.model_package_name_mapping.get(model_package_arn, model_package_arn)]
    if model_approval_status is not None:
        package.set_model_approval_status(model_approval_status)
    if approval_description is not None:
        package.approval_description = approval_description
    package.customer_metadata_properties = {
        **(package.customer_metadata_properties or {}),
        **(customer_metadata_properties or {}),
    }
    package.remove_customer_metadata_property(customer_metadata_properties_to_remove)
    package.modifications_done()
    return str(package.arn)


def _update_endpoint(self: Any, endpoint_name: str, endpoint_config_name: str, retain: bool) -> str:
    endpoint = self.endpoints[endpoint_name]
    if Failures.update_endpoint:  # SageMaker: the endpoint stays InService on the old config
        endpoint.failure_reason = Failures.update_endpoint
        return str(endpoint.arn)
    config = self.endpoint_configs[endpoint_config_name]
    before = {v["VariantName"]: v for v in endpoint.production_variants}
    staying = {v["VariantName"] for v in config.production_variants}
    targets = applicationautoscaling_backends[self.account_id][self.region_name].targets.get(SCALING_DIMENSION, {})
    scaled = sorted(v for v in before if v not in staying and f"endpoint/{endpoint_name}/variant/{v}" in targets)
    if scaled:
        raise ValidationError(
            f"The variant(s) {scaled} must be deregistered as scalable targets with AWS Application Auto Scaling"
            " before they can be removed or have their instance type updated."
        )
    variants = endpoint._process_production_variants(config.production_variants)
    for variant in variants:
        kept = before.get(variant["VariantName"])
        if retain and kept:
            for key in ("CurrentWeight", "DesiredWeight", "CurrentInstanceCount", "DesiredInstanceCount"):
                if key in kept:
                    variant[key] = kept[key]
        variant.setdefault("CurrentWeight", 0.0)
    endpoint.production_variants = variants
    endpoint.endpoint_config_name = endpoint_config_name
    endpoint.endpoint_status = "InService"
    return str(endpoint.arn)


def _update_endpoint_response(self: Any) -> Any:
    from moto.core.responses import ActionResult

    arn = self.sagemaker_backend.update_endpoint(
        self._get_param("EndpointName"),
        self._get_param("EndpointConfigName"),
        bool(self._get_param("RetainAllVariantProperties")),
    )
    return ActionResult({"EndpointArn": arn})


class _AsStepFunctionsSeesIt:
    """A client as an SDK task uses it: the runtime's body read into a string, and a throttle (a
    ClientError the service does not model) answered where a test asks for one."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, operation: str) -> Callable[..., Any]:
        method = getattr(self._client, operation)

        def call(**params: Any) -> Any:
            name = self._client.meta.method_to_api_mapping.get(operation, operation)
            if Failures.throttle.get(name, 0) > 0:
                from botocore.exceptions import ClientError

                Failures.throttle[name] -= 1
                error = {"Code": "ThrottlingException", "Message": "Rate exceeded"}
                raise ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400, "RequestId": "r"}}, name)
            answer = method(**params)
            if operation == "invoke_endpoint":
                answer["Body"] = answer["Body"].read().decode()
            return answer

        return call


class _InProcessLambda:
    """Stands in for the Lambda client moto's Step Functions would use: runs the workflow's code, the
    function's by the name its ARN ends with."""

    def __init__(
        self,
        machine_calls: Callable[[str, dict[str, Any]], None],
        functions: dict[str, Callable[[dict[str, Any]], dict[str, Any]]],
    ) -> None:
        self.record, self.functions = machine_calls, functions

    def invoke(self, FunctionName: str, Payload: bytes | str, **rest: Any) -> dict[str, Any]:
        self.record("Invoke", {"FunctionName": FunctionName, "Payload": Payload, **rest})
        event = json.loads(Payload)
        name = FunctionName.rsplit(":", 1)[-1]
        try:
            result = self.functions[name](event)
        except Exception as exc:  # what Lambda returns for an unhandled error
            body = {"errorType": type(exc).__name__, "errorMessage": str(exc)}
            return {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": io.BytesIO(json.dumps(body).encode())}
        return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(result).encode())}


def _function_environment(deployed: Deployed, name: str) -> dict[str, str]:
    logical = deployed.logical_id("AWS::Lambda::Function", FunctionName=name)
    variables: dict[str, str] = deployed.properties(logical)["Environment"]["Variables"]
    return variables


def _stand_ins(monkeypatch: pytest.MonkeyPatch, env: SimpleNamespace) -> None:
    """What moto lacks or does otherwise than AWS (the module docstring says what each cannot prove)."""
    deployed, recorder = env.deployed, env.recorder
    backend = type(sagemaker_backends[deployed.account][deployed.region])
    monkeypatch.setattr(backend, "update_endpoint", _update_endpoint, raising=False)
    monkeypatch.setattr(backend, "update_model_package", _update_model_package)
    monkeypatch.setattr(SageMakerResponse, "update_endpoint", _update_endpoint_response, raising=False)
    monkeypatch.setattr(FakeEndpointConfig, "validate_instance_type", _validate_instance_type)
    monkeypatch.setattr(Failures, "update_endpoint", None)
    monkeypatch.setattr(Failures, "throttle", {})

    def backoff(seconds: float) -> None:
        env.retry_waits.append(seconds)
        time.sleep(seconds / 100)

    monkeypatch.setattr(retrier_decl, "time", SimpleNamespace(sleep=backoff))

    def sdk_client(region: str, service: str, state_credentials: Any = None) -> Any:
        boto_service = "sagemaker-runtime" if service == "sagemakerruntime" else service
        client = recorder.client(
            env.machine_role,
            boto_service,
            region_name=region,
            config=Config(parameter_validation=False, retries={"total_max_attempts": 1}),
        )
        return _AsStepFunctionsSeesIt(client)

    for module in (state_task_service_aws_sdk, state_task_service_dynamodb, state_task_service_sns):
        monkeypatch.setattr(module, "boto_client_for", sdk_client)
    monkeypatch.setattr(
        state_task_service_aws_sdk, "_SERVICE_ERROR_NAMES", {"dynamodb": "DynamoDb", **_SDK_ERROR_NAMES}
    )


def _notifications_queue(env: SimpleNamespace) -> None:
    sqs, sns = env.session.client("sqs"), env.session.client("sns")
    env.queue = sqs.create_queue(QueueName="notifications")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=env.queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    env.topic = sns.list_topics()["Topics"][0]["TopicArn"]
    sns.subscribe(TopicArn=env.topic, Protocol="sqs", Endpoint=queue_arn)
    env.sqs = sqs


def _wiring(env: SimpleNamespace) -> None:
    """Names the tests need, read from the template the way the code gets them (the functions'
    environments, the machines' names)."""
    deployed = env.deployed
    prefix = f"sagegate-{deployed.env}"
    env.deploy_env = _function_environment(deployed, f"{prefix}-deploy")
    env.gateway_env = _function_environment(deployed, f"{prefix}-gateway")
    env.artifacts = env.gateway_env["SAGEGATE_REGISTRY_BUCKET"]
    env.batch_bucket = env.gateway_env["SAGEGATE_GATEWAY_BATCH_BUCKET"]
    env.route_table = env.gateway_env["SAGEGATE_ROUTE_TABLE"]
    machine, function = "AWS::StepFunctions::StateMachine", "AWS::Lambda::Function"
    env.deploy_machine = deployed.logical_id(machine, StateMachineName=f"{prefix}-deploy-model")
    env.batch_machine = deployed.logical_id(machine, StateMachineName=f"{prefix}-batch-inference")
    env.deploy_role = deployed.role_of(machine, StateMachineName=f"{prefix}-deploy-model")
    env.batch_role = deployed.role_of(machine, StateMachineName=f"{prefix}-batch-inference")
    env.deploy_function_role = deployed.role_of(function, FunctionName=f"{prefix}-deploy")
    env.gateway_role = deployed.role_of(function, FunctionName=f"{prefix}-gateway")
    env.monitor_env = _function_environment(deployed, f"{prefix}-monitor")
    env.monitor_machine = deployed.logical_id(machine, StateMachineName=f"{prefix}-monitor")
    env.monitor_role = deployed.role_of(machine, StateMachineName=f"{prefix}-monitor")
    env.monitor_function_role = deployed.role_of(function, FunctionName=f"{prefix}-monitor")


def _functions(monkeypatch: pytest.MonkeyPatch, env: SimpleNamespace) -> None:
    """The workflows' Lambdas (deploy, monitor), run in process as their own roles with their own
    environments."""
    session = env.recorder.session(env.deploy_function_role)
    clients = SimpleNamespace(
        s3=session.client("s3"),
        cloudwatch=session.client("cloudwatch"),
        sagemaker=session.client("sagemaker"),
        autoscaling=session.client("application-autoscaling"),
    )
    settings = {
        "kms_key": env.deploy_env["SAGEGATE_KMS_KEY_ARN"],
        "topic": env.deploy_env["SAGEGATE_TOPIC_ARN"],
        "report_bucket": env.deploy_env["SAGEGATE_REPORT_BUCKET"],
        "capture_uri": env.deploy_env["SAGEGATE_CAPTURE_URI"],
    }

    def machine_calls(operation: str, params: dict[str, Any]) -> None:
        env.recorder.record(env.machine_role, "lambda", operation, params)

    prefix = f"sagegate-{env.deployed.env}"
    monitor = _monitor_function(env)
    client = _InProcessLambda(
        machine_calls,
        {
            f"{prefix}-deploy": lambda event: handle(event, clients=clients, settings=settings),
            f"{prefix}-monitor": monitor,
        },
    )
    monkeypatch.setattr(lambda_eval_utils, "boto_client_for", lambda region, service, state_credentials=None: client)


def _monitor_function(env: SimpleNamespace) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The monitor Lambda's handler (functions/monitor/handler.py) with its role's clients."""
    from sagegate.registry.sagemaker import SageMakerRegistry
    from sagegate.workflows import monitor

    session = env.recorder.session(env.monitor_function_role)
    variables = env.monitor_env
    s3 = session.client("s3")
    clients = SimpleNamespace(
        s3=s3,
        athena=session.client("athena"),
        cloudwatch=session.client("cloudwatch"),
        registry=SageMakerRegistry(
            session.client("sagemaker"), s3, bucket=variables["SAGEGATE_REGISTRY_BUCKET"], image_uri=""
        ),
    )
    settings = monitor.MonitorSettings(
        database=variables["SAGEGATE_MONITOR_DATABASE"],
        table=variables["SAGEGATE_MONITOR_TABLE"],
        reports_bucket=variables["SAGEGATE_MONITOR_REPORTS_BUCKET"],
        workgroup=variables["SAGEGATE_MONITOR_WORKGROUP"],
    )
    return lambda event: monitor.handle(event, clients, settings)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    """The dev environment's account with fraud pinned to version 1 (the stack made its endpoint), its
    deploy and batch state machines ready to run."""
    yield from _world(monkeypatch, synthesized("dev", pinned=True))


@pytest.fixture
def first_world(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    """The dev environment's account as cdk.json makes it: fraud configured by how it is served, no
    endpoint until a version is approved."""
    yield from _world(monkeypatch, synthesized("dev"))


def _world(monkeypatch: pytest.MonkeyPatch, deployed: Deployed) -> Iterator[SimpleNamespace]:
    monkeypatch.setenv("MOTO_ACCOUNT_ID", deployed.account)
    recorder = Recorder(deployed)
    env = SimpleNamespace(deployed=deployed, recorder=recorder, machine_role="", retry_waits=[])
    env.on_call = recorder.on_call
    _stand_ins(monkeypatch, env)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        built = build_account(deployed, recorder)  # the endpoints by their custom resource, recorded
        env.built_calls = len(recorder.calls)
        env.session, env.machines = built["session"], built["machines"]
        for name, service in (
            ("s3", "s3"),
            ("sm", "sagemaker"),
            ("ddb", "dynamodb"),
            ("cloudwatch", "cloudwatch"),
            ("sfn", "stepfunctions"),
            ("autoscaling", "application-autoscaling"),
        ):
            setattr(env, name, env.session.client(service))
        _notifications_queue(env)
        _wiring(env)
        _functions(monkeypatch, env)
        yield env
        recorder.assert_allowed()
        recorder.assert_valid()


def run_execution(
    env: SimpleNamespace, machine: str, name: str, payload: dict[str, Any], *, timeout: float = 90
) -> dict[str, Any]:
    """Starts `machine` (a logical id) with `payload` and waits for it to end (see `finished`)."""
    env.machine_role = {
        env.deploy_machine: env.deploy_role,
        env.batch_machine: env.batch_role,
        env.monitor_machine: env.monitor_role,
    }[machine]
    with env.recorder.off():
        arn = env.sfn.start_execution(stateMachineArn=env.machines[machine], name=name, input=json.dumps(payload))[
            "executionArn"
        ]
    return finished(env, arn, timeout=timeout)


def finished(env: SimpleNamespace, arn: str, *, timeout: float = 90) -> dict[str, Any]:
    """The execution once it ended: its status, output, error and the states it entered."""
    deadline = time.monotonic() + timeout
    with env.recorder.off():
        while time.monotonic() < deadline:
            described = env.sfn.describe_execution(executionArn=arn)
            if described["status"] != "RUNNING":
                history = env.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
                failed = [e for e in history if e["type"] == "ExecutionFailed"]
                return {
                    "status": described["status"],
                    "arn": arn,
                    "output": json.loads(described.get("output") or "null"),
                    "error": failed[0]["executionFailedEventDetails"] if failed else None,
                    "states": [
                        e["stateEnteredEventDetails"]["name"] for e in history if "stateEnteredEventDetails" in e
                    ],
                }
            time.sleep(0.1)
    raise AssertionError("the execution did not finish")


def notifications(env: SimpleNamespace) -> list[str]:
    with env.recorder.off():
        messages = env.sqs.receive_message(QueueUrl=env.queue, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"])["Message"] for m in messages]
