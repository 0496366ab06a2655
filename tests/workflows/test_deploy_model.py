"""stepfunctions/deploy_model.asl.json executed by moto's Step Functions against moto's SageMaker,
CloudWatch, DynamoDB, S3 and SNS, with the workflow's Lambda (sagegate.workflows.deploy) run in
this process.

Three things moto cannot do are filled in by the fixture, and what each cannot prove is said here:
- moto has no UpdateEndpoint: `_update_endpoint` swaps the endpoint's config at once (InService),
  keeping the weights of variants that stay, or fails the way SageMaker does (the endpoint stays
  InService on its old config), including SageMaker's refusal to remove a variant that is still a
  scalable target of Application Auto Scaling (moto's, which the fixture registers v1 with). It
  cannot prove SageMaker's timings, the blue/green traffic shifting of `replace`, or capacity
  errors; the request's shape is asserted instead.
- moto runs Lambda tasks only in Docker (not on this machine): the Lambda integration calls
  `sagegate.workflows.deploy.handle` in process with the same payload. This proves the contract
  between the states and the code, not the Lambda's packaging.
- moto's SDK integration knows boto3's service names, not Step Functions' `sagemakerruntime`: the
  fixture maps it to `sagemaker-runtime` and reads the response body into a string, as Step
  Functions does. The smoke test's answer comes from moto's queue of
  endpoint results, so TargetVariant is asserted on the request, not on routing.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
import requests
from moto import mock_aws
from moto.applicationautoscaling.models import applicationautoscaling_backends
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import sagemaker_backends
from moto.sagemaker.responses import SageMakerResponse
from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service_aws_sdk

from sagegate.routing import Route
from sagegate.workflows.definitions import load_definition
from sagegate.workflows.deploy import alarm_name, handle
from tests.route_tables import create_route_table

REGION = "eu-west-1"
ACCOUNT = "123456789012"
ENDPOINT = "sagegate-dev-fraud"
SCALING_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
SAMPLE = [{"amount": 12.5, "merchant": "grocery"}, {"amount": 990.0, "merchant": "travel"}]


class _Failures:
    update_endpoint: str | None = None  # a reason makes the next UpdateEndpoint fail


def _update_endpoint(self: Any, endpoint_name: str, endpoint_config_name: str, retain: bool) -> str:
    endpoint = self.endpoints[endpoint_name]
    if _Failures.update_endpoint:  # SageMaker: the endpoint stays InService on the old config
        endpoint.failure_reason = _Failures.update_endpoint
        return str(endpoint.arn)
    config = self.endpoint_configs[endpoint_config_name]
    before = {v["VariantName"]: v for v in endpoint.production_variants}
    staying = {v["VariantName"] for v in config.production_variants}
    targets = applicationautoscaling_backends[ACCOUNT][REGION].targets.get(SCALING_DIMENSION, {})
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


class _RuntimeAsStepFunctionsSeesIt:
    """Step Functions hands a task the response body as a string; boto3 (and so moto) gives a stream."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def invoke_endpoint(self, **params: Any) -> dict[str, Any]:
        answer: dict[str, Any] = self._client.invoke_endpoint(**params)
        answer["Body"] = answer["Body"].read().decode()
        return answer


class _InProcessLambda:
    """Stands in for the Lambda client moto's Step Functions would use: runs the workflow's code."""

    def __init__(self, clients: Any, settings: dict[str, str]) -> None:
        self.clients, self.settings = clients, settings

    def invoke(self, FunctionName: str, Payload: bytes | str, **_: Any) -> dict[str, Any]:
        event = json.loads(Payload)
        try:
            result = handle(event, clients=self.clients, settings=self.settings)
        except Exception as exc:  # what Lambda returns for an unhandled error
            body = {"errorType": type(exc).__name__, "errorMessage": str(exc)}
            return {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": io.BytesIO(json.dumps(body).encode())}
        return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(result).encode())}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    monkeypatch.setattr(type(sagemaker_backends[ACCOUNT][REGION]), "update_endpoint", _update_endpoint, raising=False)
    monkeypatch.setattr(SageMakerResponse, "update_endpoint", _update_endpoint_response, raising=False)
    monkeypatch.setattr(_Failures, "update_endpoint", None)
    real_client_for = state_task_service_aws_sdk.boto_client_for

    def client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        if service != "sagemakerruntime":
            return real_client_for(region=region, service=service)
        return _RuntimeAsStepFunctionsSeesIt(real_client_for(region=region, service="sagemaker-runtime"))

    monkeypatch.setattr(state_task_service_aws_sdk, "boto_client_for", client_for)

    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        boto3.setup_default_session(region_name=REGION)
        calls: list[tuple[str, dict[str, Any]]] = []
        env = SimpleNamespace(calls=calls, on_call=[])

        def record(params: dict[str, Any], model: Any, **_: Any) -> None:
            calls.append(
                (f"{model.service_model.service_name}:{model.name}", json.loads(json.dumps(params, default=str)))
            )
            for hook in env.on_call:
                hook(model.name, params)

        boto3.DEFAULT_SESSION.events.register("before-parameter-build", record)
        s3, sm = boto3.client("s3"), boto3.client("sagemaker")
        for bucket in ("sagegate-models", "sagegate-reports", "sagegate-capture"):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        env.s3, env.sm = s3, sm
        env.cloudwatch = boto3.client("cloudwatch")
        env.ddb = boto3.client("dynamodb")
        create_route_table(env.ddb, "sagegate-dev-routes")
        sns, sqs = boto3.client("sns"), boto3.client("sqs")
        topic = sns.create_topic(Name="sagegate-dev")["TopicArn"]
        env.queue = sqs.create_queue(QueueName="notifications")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=env.queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
        env.sqs = sqs
        role = boto3.client("iam").create_role(
            RoleName="sagemaker", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []})
        )["Role"]["Arn"]
        env.role = role

        # The live endpoint: v1 on two instances, data capture on.
        sm.create_model(ModelName="sagegate-dev-fraud-v1-0", ExecutionRoleArn=role, PrimaryContainer={"Image": "img"})
        sm.create_endpoint_config(
            EndpointConfigName="sagegate-dev-fraud-v1",
            ProductionVariants=[
                {
                    "VariantName": "v1",
                    "ModelName": "sagegate-dev-fraud-v1-0",
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": 2,
                    "InitialVariantWeight": 1.0,
                }
            ],
            DataCaptureConfig={
                "EnableCapture": True,
                "InitialSamplingPercentage": 100,
                "DestinationS3Uri": "s3://sagegate-capture/capture",
                "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            },
        )
        sm.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName="sagegate-dev-fraud-v1")
        # v1 scales as the CDK stack registers it: invocations per instance, and its own GPU metric.
        env.autoscaling = boto3.client("application-autoscaling")
        scale(env, "v1")
        sm.create_model_package_group(ModelPackageGroupName="fraud")
        for version in ("1", "2"):
            register(env, version, approved=True)

        settings = {"kms_key": "", "topic": topic, "report_bucket": "sagegate-reports"}
        clients = SimpleNamespace(s3=s3, cloudwatch=env.cloudwatch, sagemaker=sm, autoscaling=env.autoscaling)
        monkeypatch.setattr(
            lambda_eval_utils,
            "boto_client_for",
            lambda region, service, state_credentials=None: _InProcessLambda(clients, settings),
        )
        definition = load_definition(
            "deploy_model",
            {
                "EndpointPrefix": "sagegate-dev-",
                "ModelPackageArnPrefix": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package",
                "RouteTable": "sagegate-dev-routes",
                "TopicArn": topic,
                "DeployFunctionArn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:sagegate-dev-deploy",
                "SageMakerRoleArn": role,
            },
        )
        env.sfn = boto3.client("stepfunctions")
        env.machine = env.sfn.create_state_machine(name="deploy_model", definition=definition, roleArn=role)[
            "stateMachineArn"
        ]
        env.setup = len(calls)  # what the tests look at starts after the fixture's own calls
        yield env
        boto3.DEFAULT_SESSION.events.unregister("before-parameter-build", record)
    boto3.DEFAULT_SESSION = None


def scale(env: SimpleNamespace, variant: str) -> None:
    resource = f"endpoint/{ENDPOINT}/variant/{variant}"
    target = {"ServiceNamespace": "sagemaker", "ResourceId": resource, "ScalableDimension": SCALING_DIMENSION}
    env.autoscaling.register_scalable_target(**target, MinCapacity=2, MaxCapacity=6)
    env.autoscaling.put_scaling_policy(
        **target,
        PolicyName="Invocations",
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 2000.0,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            "ScaleInCooldown": 300,
            "ScaleOutCooldown": 60,
        },
    )
    env.autoscaling.put_scaling_policy(
        **target,
        PolicyName="GpuUtilization",
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 70.0,
            "CustomizedMetricSpecification": {
                "MetricName": "GPUUtilization",
                "Namespace": "/aws/sagemaker/Endpoints",
                "Dimensions": [{"Name": "EndpointName", "Value": ENDPOINT}, {"Name": "VariantName", "Value": variant}],
                "Statistic": "Average",
            },
        },
    )


def scaling(env: SimpleNamespace) -> dict[str, Any]:
    """Each variant's scalable target: (min, max), and per policy the variant its custom metric
    names (the GPU policy) or else its target value."""

    def shown(policy: dict[str, Any]) -> Any:
        config = policy["TargetTrackingScalingPolicyConfiguration"]
        dimensions = config.get("CustomizedMetricSpecification", {}).get("Dimensions", [])
        named = [d["Value"] for d in dimensions if d["Name"] == "VariantName"]
        return named[0] if named else config["TargetValue"]

    found: dict[str, Any] = {}
    for target in env.autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]:
        policies = env.autoscaling.describe_scaling_policies(
            ServiceNamespace="sagemaker", ResourceId=target["ResourceId"]
        )["ScalingPolicies"]
        found[target["ResourceId"].rsplit("/", 1)[-1]] = {
            "capacity": (target["MinCapacity"], target["MaxCapacity"]),
            "policies": {p["PolicyName"]: shown(p) for p in policies},
        }
    return found


def register(env: SimpleNamespace, version: str, *, approved: bool) -> str:
    key = f"models/fraud/{version}/manifest.json"
    env.s3.put_object(Bucket="sagegate-models", Key=key, Body=json.dumps({"name": "fraud", "sample": SAMPLE}).encode())
    arn = env.sm.create_model_package(
        ModelPackageGroupName="fraud",
        InferenceSpecification={
            "Containers": [
                {"Image": "img", "ModelDataUrl": f"s3://sagegate-models/models/fraud/{version}/model.tar.gz"}
            ],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        ModelApprovalStatus="PendingManualApproval",
        CustomerMetadataProperties={"sha256": version * 8, "manifest_uri": f"s3://sagegate-models/{key}"},
    )["ModelPackageArn"]
    if approved:
        env.sm.update_model_package(
            ModelPackageArn=arn,
            ModelApprovalStatus="Approved",
            CustomerMetadataProperties={"sha256": version * 8, "manifest_uri": f"s3://sagegate-models/{key}"},
        )
    return str(arn)


def queue_answers(*bodies: str) -> None:
    """moto's sagemaker-runtime answers InvokeEndpoint from this queue, in order."""
    results = [{"Body": b, "ContentType": "application/json", "InvokedProductionVariant": "v2"} for b in bodies]
    requests.post(
        "http://motoapi.amazonaws.com/moto-api/static/sagemaker/endpoint-results",
        json={"account_id": ACCOUNT, "region": REGION, "results": results},
        timeout=5,
    )


GOOD_ANSWER = json.dumps(
    {
        "predictions": [
            {"prediction": 0.1, "label": "legit", "confidence": 0.9},
            {"prediction": 0.8, "label": "fraud", "confidence": 0.8},
        ]
    }
)


def rollout(env: SimpleNamespace, name: str, **overrides: Any) -> dict[str, Any]:
    payload = {
        "model": "fraud",
        "version": "2",
        "strategy": "canary",
        "steps": [5, 20, 50, 100],
        "bake_seconds": 0,
        "retention_seconds": 0,
        "poll_seconds": 0,
        **overrides,
    }
    arn = env.sfn.start_execution(stateMachineArn=env.machine, name=name, input=json.dumps(payload))["executionArn"]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        described = env.sfn.describe_execution(executionArn=arn)
        if described["status"] != "RUNNING":
            history = env.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
            failed = [e for e in history if e["type"] == "ExecutionFailed"]
            return {
                "status": described["status"],
                "output": json.loads(described.get("output") or "null"),
                "error": failed[0]["executionFailedEventDetails"] if failed else None,
                "states": [e["stateEnteredEventDetails"]["name"] for e in history if "stateEnteredEventDetails" in e],
            }
        time.sleep(0.1)
    raise AssertionError("the execution did not finish")


def weight_updates(env: SimpleNamespace) -> list[dict[str, float]]:
    return [
        {w["VariantName"]: w["DesiredWeight"] for w in params["DesiredWeightsAndCapacities"]}
        for op, params in env.calls[env.setup :]
        if op == "sagemaker:UpdateEndpointWeightsAndCapacities"
    ]


def calls(env: SimpleNamespace, operation: str) -> list[dict[str, Any]]:
    return [params for op, params in env.calls[env.setup :] if op == operation]


def stored_route(env: SimpleNamespace) -> Route:
    item = env.ddb.get_item(TableName="sagegate-dev-routes", Key={"model": {"S": "fraud"}, "kind": {"S": "route"}})
    return Route.model_validate_json(item["Item"]["route"]["S"])


def notifications(env: SimpleNamespace) -> list[str]:
    messages = env.sqs.receive_message(QueueUrl=env.queue, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"])["Message"] for m in messages]


def live_variants(env: SimpleNamespace) -> dict[str, float]:
    described = env.sm.describe_endpoint(EndpointName=ENDPOINT)
    return {v["VariantName"]: v.get("CurrentWeight", 0.0) for v in described["ProductionVariants"]}


def package_metadata(env: SimpleNamespace, version: str) -> dict[str, str]:
    arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/fraud/{version}"
    return dict(env.sm.describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"])


# -- the happy path ----------------------------------------------------------------------------------


def test_canary_walks_every_step_then_retires_the_old_variant(aws: SimpleNamespace) -> None:
    queue_answers(GOOD_ANSWER)
    result = rollout(aws, "canary-ok")
    assert result["status"] == "SUCCEEDED", result

    assert weight_updates(aws) == [
        {"v1": 95.0, "v2": 5.0},
        {"v1": 80.0, "v2": 20.0},
        {"v1": 50.0, "v2": 50.0},
        {"v1": 0.0, "v2": 100.0},
    ]
    (created,) = [c for c in calls(aws, "sagemaker:CreateEndpointConfig") if "ramp" in c["EndpointConfigName"]]
    assert [(v["VariantName"], v["InitialVariantWeight"]) for v in created["ProductionVariants"]] == [
        ("v1", 1.0),
        ("v2", 0.0),
    ]
    new = created["ProductionVariants"][1]
    assert (new["InstanceType"], new["InitialInstanceCount"]) == ("ml.m5.large", 2)
    assert created["DataCaptureConfig"]["EnableCapture"] is True  # capture carried over
    (model,) = calls(aws, "sagemaker:CreateModel")
    assert model["PrimaryContainer"]["ModelPackageName"].endswith("model-package/fraud/2")
    assert model["EnableNetworkIsolation"] is True

    (smoke,) = calls(aws, "sagemaker-runtime:InvokeEndpoint")
    assert (smoke["EndpointName"], smoke["TargetVariant"]) == (ENDPOINT, "v2")
    assert json.loads(smoke["Body"]) == {"instances": SAMPLE}

    alarms = {a["AlarmName"] for a in calls(aws, "cloudwatch:PutMetricAlarm")}
    assert alarms == {alarm_name(ENDPOINT, "v2", "errors"), alarm_name(ENDPOINT, "v2", "latency")}
    assert len(calls(aws, "cloudwatch:DescribeAlarms")) == 4  # one bake check per step at bake 0

    # Retention over: the endpoint serves v2 alone, the old config and model are gone.
    assert live_variants(aws) == {"v2": 100.0} or set(live_variants(aws)) == {"v2"}
    configs = {c["EndpointConfigName"] for c in aws.sm.list_endpoint_configs()["EndpointConfigs"]}
    assert "sagegate-dev-fraud-v1" not in configs
    assert "sagegate-dev-fraud-v1-0" not in {m["ModelName"] for m in aws.sm.list_models()["Models"]}
    route = stored_route(aws)
    assert [(v.name, v.weight) for v in route.variants] == [("v2", 100.0)]
    # v1 was taken off autoscaling before the final update (SageMaker refuses otherwise); v2 scales as v1 did.
    assert scaling(aws) == {"v2": {"capacity": (2, 6), "policies": {"Invocations": 2000.0, "GpuUtilization": "v2"}}}
    assert package_metadata(aws, "2")["rollout"] == "live"
    assert package_metadata(aws, "2")["manifest_uri"]  # the other metadata kept
    assert any("is live" in m for m in notifications(aws))


def test_the_stand_in_refuses_to_remove_a_variant_that_still_scales(aws: SimpleNamespace) -> None:
    """What makes the canary above prove the release: without it the final update is refused."""
    aws.sm.create_endpoint_config(
        EndpointConfigName="without-v1",
        ProductionVariants=[
            {
                "VariantName": "other",
                "ModelName": "sagegate-dev-fraud-v1-0",
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 1,
                "InitialVariantWeight": 1.0,
            }
        ],
    )
    with pytest.raises(aws.sm.exceptions.ClientError, match="must be deregistered as scalable targets"):
        aws.sm.update_endpoint(EndpointName=ENDPOINT, EndpointConfigName="without-v1")


def test_a_failed_final_update_gives_the_old_variant_its_scaling_back(aws: SimpleNamespace) -> None:
    def fail_final(operation: str, params: dict[str, Any]) -> None:
        if operation == "UpdateEndpoint" and "final" in params.get("EndpointConfigName", ""):
            _Failures.update_endpoint = "insufficient capacity"

    aws.on_call.append(fail_final)
    queue_answers(GOOD_ANSWER)
    result = rollout(aws, "final-fails")
    assert result["status"] == "FAILED" and "ReapplyScaling" in result["states"], result
    # v2 took all traffic and stays; v1 waits at weight 0 on the ramp config, both scale as v1 did.
    assert set(live_variants(aws)) == {"v1", "v2"}
    assert scaling(aws) == {
        "v1": {"capacity": (2, 6), "policies": {"Invocations": 2000.0, "GpuUtilization": "v1"}},
        "v2": {"capacity": (2, 6), "policies": {"Invocations": 2000.0, "GpuUtilization": "v2"}},
    }
    sent = notifications(aws)
    assert any("removing the old variant failed" in m for m in sent), sent


def test_routes_follow_the_ramp(aws: SimpleNamespace) -> None:
    queue_answers(GOOD_ANSWER)
    seen: list[float] = []

    def on_call(operation: str, params: dict[str, Any]) -> None:
        if operation == "UpdateEndpointWeightsAndCapacities":
            seen.append(
                next(w["DesiredWeight"] for w in params["DesiredWeightsAndCapacities"] if w["VariantName"] == "v2")
            )
        if operation == "DescribeAlarms" and seen:  # during each bake the route store holds that step
            route = stored_route(aws)
            assert route.variant("v2").weight == seen[-1]

    aws.on_call.append(on_call)
    assert rollout(aws, "canary-routes")["status"] == "SUCCEEDED"
    assert seen == [5.0, 20.0, 50.0, 100.0]


# -- rollbacks ----------------------------------------------------------------------------------------


def test_an_alarm_at_20_percent_rolls_everything_back(aws: SimpleNamespace) -> None:
    queue_answers(GOOD_ANSWER)

    def breach_at_20(operation: str, params: dict[str, Any]) -> None:
        if operation == "UpdateEndpointWeightsAndCapacities":
            weights = {w["VariantName"]: w["DesiredWeight"] for w in params["DesiredWeightsAndCapacities"]}
            if weights.get("v2") == 20.0:
                aws.cloudwatch.set_alarm_state(
                    AlarmName=alarm_name(ENDPOINT, "v2", "latency"), StateValue="ALARM", StateReason="p99 650 ms"
                )

    aws.on_call.append(breach_at_20)
    result = rollout(aws, "canary-alarm")
    assert result["status"] == "FAILED"
    assert result["error"]["error"] == "AlarmBreached"
    cause = result["error"]["cause"]
    # "alarms [names] are [states] at 20.0% of traffic": DescribeAlarms' order is not promised (moto's varies).
    found = re.fullmatch(r"alarms (\[.*\]) are (\[.*\]) at 20\.0% of traffic", cause)
    assert found, cause
    states = dict(zip(json.loads(found[1]), json.loads(found[2]), strict=True))
    assert states == {alarm_name(ENDPOINT, "v2", "errors"): "OK", alarm_name(ENDPOINT, "v2", "latency"): "ALARM"}
    assert weight_updates(aws) == [{"v1": 95.0, "v2": 5.0}, {"v1": 80.0, "v2": 20.0}, {"v1": 100.0, "v2": 0.0}]
    _assert_rolled_back(aws)
    assert any("rolled back" in m and "AlarmBreached" in m for m in notifications(aws))


def _assert_rolled_back(aws: SimpleNamespace) -> None:
    assert aws.sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] == "sagegate-dev-fraud-v1"
    assert set(live_variants(aws)) == {"v1"}
    assert [(v.name, v.weight) for v in stored_route(aws).variants] == [("v1", 100.0)]
    models = {m["ModelName"] for m in aws.sm.list_models()["Models"]}
    assert models == {"sagegate-dev-fraud-v1-0"}  # the new model is gone, the live one stays
    configs = {c["EndpointConfigName"] for c in aws.sm.list_endpoint_configs()["EndpointConfigs"]}
    assert configs == {"sagegate-dev-fraud-v1"}
    assert aws.cloudwatch.describe_alarms(AlarmNamePrefix=f"sagegate-{ENDPOINT}-v2")["MetricAlarms"] == []
    assert package_metadata(aws, "2")["rollout"] == "rolled_back"


def test_a_failing_smoke_test_rolls_back_before_any_traffic(aws: SimpleNamespace) -> None:
    queue_answers(json.dumps({"predictions": [{"prediction": 0.1}]}))  # one answer for two records
    result = rollout(aws, "canary-smoke")
    assert result["status"] == "FAILED"
    assert "SmokeTestFailed" in result["error"]["error"] or "SmokeTestFailed" in result["error"]["cause"]
    assert "1 predictions for 2 records" in result["error"]["cause"]
    assert weight_updates(aws) == [{"v1": 100.0, "v2": 0.0}]  # only the rollback's own reset
    _assert_rolled_back(aws)


def test_a_failed_endpoint_update_rolls_back(aws: SimpleNamespace) -> None:
    _Failures.update_endpoint = "the primary container for variant v2 did not pass the ping health check"
    result = rollout(aws, "canary-update-fails")
    assert result["status"] == "FAILED"
    assert result["error"]["error"] == "EndpointUpdateFailed"
    assert "sagegate-dev-fraud-v1" in result["error"]["cause"]
    assert calls(aws, "sagemaker-runtime:InvokeEndpoint") == []  # no smoke test on a failed update
    _assert_rolled_back(aws)


def test_a_version_that_is_not_approved_is_refused_without_changes(aws: SimpleNamespace) -> None:
    register(aws, "3", approved=False)
    result = rollout(aws, "not-approved", version="3")
    assert result["status"] == "FAILED"
    assert result["error"]["error"] == "NotApproved"
    assert calls(aws, "sagemaker:CreateModel") == [] and calls(aws, "sagemaker:UpdateEndpoint") == []
    assert any("was not deployed" in m for m in notifications(aws))


# -- idempotency --------------------------------------------------------------------------------------


def test_a_duplicate_start_does_not_roll_out_twice(aws: SimpleNamespace) -> None:
    queue_answers(GOOD_ANSWER)
    assert rollout(aws, "first")["status"] == "SUCCEEDED"
    before = len(aws.calls)
    second = rollout(aws, "duplicate-event")
    assert second["status"] == "SUCCEEDED"
    assert second["states"][-1] == "Duplicate"
    changes = [op for op, _ in aws.calls[before:] if op.split(":")[1].startswith(("Create", "Update", "Delete"))]
    assert changes == []


def test_a_rolled_back_version_can_be_tried_again(aws: SimpleNamespace) -> None:
    _Failures.update_endpoint = "capacity"
    assert rollout(aws, "try-1")["status"] == "FAILED"
    _Failures.update_endpoint = None
    queue_answers(GOOD_ANSWER)
    assert rollout(aws, "try-2")["status"] == "SUCCEEDED"
    assert set(live_variants(aws)) == {"v2"}


# -- A/B, shadow, replace -------------------------------------------------------------------------------


def test_ab_stops_at_its_share_and_keeps_both_variants(aws: SimpleNamespace) -> None:
    queue_answers(GOOD_ANSWER)
    result = rollout(aws, "ab", strategy="ab", steps=[30])
    assert result["status"] == "SUCCEEDED", result
    assert weight_updates(aws) == [{"v1": 70.0, "v2": 30.0}]
    assert set(live_variants(aws)) == {"v1", "v2"}
    assert {v.name: v.weight for v in stored_route(aws).variants} == {"v1": 70.0, "v2": 30.0}
    both = {"capacity": (2, 6), "policies": {"Invocations": 2000.0}}
    assert scaling(aws) == {
        "v1": {**both, "policies": {**both["policies"], "GpuUtilization": "v1"}},
        "v2": {**both, "policies": {**both["policies"], "GpuUtilization": "v2"}},
    }


def test_shadow_compares_with_production_and_stops(aws: SimpleNamespace) -> None:
    _captured(aws, "v1", [("p1", "legit"), ("p2", "fraud"), ("p3", "legit"), ("p4", "legit")])
    _captured(aws, "v2", [("p1", "legit"), ("p2", "fraud"), ("p3", "fraud"), ("p4", "legit")])
    result = rollout(aws, "shadow", strategy="shadow", steps=[], shadow_seconds=0)
    assert result["status"] == "SUCCEEDED", result

    (config,) = [c for c in calls(aws, "sagemaker:CreateEndpointConfig") if "shadow" in c["EndpointConfigName"]]
    assert [v["VariantName"] for v in config["ProductionVariants"]] == ["v1"]
    assert [v["VariantName"] for v in config["ShadowProductionVariants"]] == ["v2"]
    assert weight_updates(aws) == []  # no traffic moved: SageMaker mirrored it
    report = result["output"]["shadow"]["report"]
    assert report["agreement"] == {"compared": 4, "agreeing": 3, "rate": 0.75}
    bucket, _, key = report["uri"].removeprefix("s3://").partition("/")
    assert json.loads(aws.s3.get_object(Bucket=bucket, Key=key)["Body"].read())["agreement"]["rate"] == 0.75
    assert aws.sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] == "sagegate-dev-fraud-v1"
    assert package_metadata(aws, "2")["rollout"] == "shadowed"
    assert any("shadowed" in m and report["uri"] in m for m in notifications(aws))


def test_shadow_then_canary_continues_into_the_ramp(aws: SimpleNamespace) -> None:
    queue_answers(GOOD_ANSWER)
    result = rollout(aws, "shadow-canary", strategy="shadow", steps=[], shadow_seconds=0, after_shadow="canary")
    assert result["status"] == "SUCCEEDED", result
    assert [u["v2"] for u in weight_updates(aws)] == [5.0, 20.0, 50.0, 100.0]
    assert set(live_variants(aws)) == {"v2"}
    configs = {c["EndpointConfigName"] for c in aws.sm.list_endpoint_configs()["EndpointConfigs"]}
    assert all("final" in c for c in configs), configs  # original, shadow and ramp configs retired


def test_replace_uses_sagemaker_blue_green_with_alarm_rollback(aws: SimpleNamespace) -> None:
    result = rollout(aws, "replace", strategy="replace", steps=[10, 100], bake_seconds=300)
    assert result["status"] == "SUCCEEDED", result
    (update,) = [c for c in calls(aws, "sagemaker:UpdateEndpoint") if "DeploymentConfig" in c]
    policy = update["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"] == {
        "Type": "CANARY",
        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10},
        "WaitIntervalInSeconds": 300,
    }
    assert {a["AlarmName"] for a in update["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]} == {
        alarm_name(ENDPOINT, "v1", "errors"),
        alarm_name(ENDPOINT, "v1", "latency"),
    }
    (config,) = [c for c in calls(aws, "sagemaker:CreateEndpointConfig") if "replace" in c["EndpointConfigName"]]
    assert [v["VariantName"] for v in config["ProductionVariants"]] == ["v1"]  # same name, new model
    assert config["ProductionVariants"][0]["ModelName"] != "sagegate-dev-fraud-v1-0"
    assert stored_route(aws).variants[0].model_version == "2"
    assert weight_updates(aws) == []


def _captured(aws: SimpleNamespace, variant: str, answers: list[tuple[str, str]]) -> None:
    lines = [
        json.dumps(
            {
                "captureData": {
                    "endpointInput": {"data": json.dumps({"features": {"id": pid}}), "encoding": "JSON"},
                    "endpointOutput": {
                        "data": json.dumps({"predictions": [{"prediction": 0.5, "label": label}]}),
                        "encoding": "JSON",
                    },
                },
                "eventMetadata": {"inferenceId": pid, "eventId": f"{variant}-{pid}"},
            }
        )
        for pid, label in answers
    ]
    aws.s3.put_object(
        Bucket="sagegate-capture",
        Key=f"capture/{ENDPOINT}/{variant}/2026/11/28/15/part-0.jsonl",
        Body="\n".join(lines).encode(),
    )
