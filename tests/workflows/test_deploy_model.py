"""stepfunctions/deploy_model.asl.json as the dev stack synthesizes it, executed by moto's Step
Functions in an account built from the same template (tests/workflows/conftest.py says what the
stand-ins cannot prove). Each test ends with every AWS call checked against the synthesized role that
made it and against botocore's model of the request."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from sagegate.routing import Route
from sagegate.workflows.deploy import alarm_name
from tests.workflows.conftest import Failures, notifications, run_execution

ENDPOINT = "sagegate-dev-fraud"
SCALING_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
SAMPLE = [{"amount": 12.5, "merchant": "grocery"}, {"amount": 990.0, "merchant": "travel"}]


@pytest.fixture
def aws(world: SimpleNamespace) -> SimpleNamespace:
    """The dev account with fraud v1 live (as CloudFormation made it) and versions 1 and 2 registered."""
    with world.recorder.off():
        world.sm.create_model_package_group(ModelPackageGroupName="fraud")
        for version in ("1", "2"):
            register(world, version, approved=True)
        described = world.sm.describe_endpoint(EndpointName=ENDPOINT)
        world.live_config = described["EndpointConfigName"]
        world.live_models = {
            v["ModelName"]
            for v in world.sm.describe_endpoint_config(EndpointConfigName=world.live_config)["ProductionVariants"]
        }
        world.v1_scaling = scaling(world)["v1"]
    return world


def rollout(env: SimpleNamespace, name: str, **overrides: Any) -> dict[str, Any]:
    payload = {
        "model": "fraud",
        "version": "2",
        "strategy": "canary",
        "steps": [5, 20, 50, 100],
        "bake_seconds": 0,
        "retention_seconds": 0,
        "poll_seconds": 0,
        "trigger": "manual",
        **overrides,
    }
    return run_execution(env, env.deploy_machine, name, payload)


def gpu_scaling(env: SimpleNamespace, variant: str) -> None:
    """A GPU variant's second policy (prod's images model has one): the variant's own GPUUtilization."""
    with env.recorder.off():
        env.autoscaling.put_scaling_policy(
            ServiceNamespace="sagemaker",
            ResourceId=f"endpoint/{ENDPOINT}/variant/{variant}",
            ScalableDimension=SCALING_DIMENSION,
            PolicyName="GpuUtilization",
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": 70.0,
                "CustomizedMetricSpecification": {
                    "MetricName": "GPUUtilization",
                    "Namespace": "/aws/sagemaker/Endpoints",
                    "Dimensions": [
                        {"Name": "EndpointName", "Value": ENDPOINT},
                        {"Name": "VariantName", "Value": variant},
                    ],
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
    with env.recorder.off():
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
    bucket = env.artifacts
    key = f"models/fraud/{version}/manifest.json"
    metadata = {"sha256": version * 8, "manifest_uri": f"s3://{bucket}/{key}"}
    with env.recorder.off():
        env.s3.put_object(Bucket=bucket, Key=key, Body=json.dumps({"name": "fraud", "sample": SAMPLE}).encode())
        arn = env.sm.create_model_package(
            ModelPackageGroupName="fraud",
            InferenceSpecification={
                "Containers": [{"Image": "img", "ModelDataUrl": f"s3://{bucket}/models/fraud/{version}/model.tar.gz"}],
                "SupportedContentTypes": ["application/json"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
            ModelApprovalStatus="PendingManualApproval",
            CustomerMetadataProperties=metadata,
        )["ModelPackageArn"]
        if approved:
            env.sm.update_model_package(
                ModelPackageArn=arn, ModelApprovalStatus="Approved", CustomerMetadataProperties=metadata
            )
    return str(arn)


def queue_answers(env: SimpleNamespace, *bodies: str) -> None:
    """moto's sagemaker-runtime answers InvokeEndpoint from this queue, in order."""
    results = [{"Body": b, "ContentType": "application/json", "InvokedProductionVariant": "v2"} for b in bodies]
    requests.post(
        "http://motoapi.amazonaws.com/moto-api/static/sagemaker/endpoint-results",
        json={"account_id": env.deployed.account, "region": env.deployed.region, "results": results},
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


def calls(env: SimpleNamespace, operation: str) -> list[dict[str, Any]]:
    """The calls made since the account was built (not the endpoint's creation by its custom resource)."""
    return [c.params for c in env.recorder.calls[env.built_calls :] if f"{c.service}:{c.operation}" == operation]


def weight_updates(env: SimpleNamespace) -> list[dict[str, float]]:
    return [
        {w["VariantName"]: w["DesiredWeight"] for w in params["DesiredWeightsAndCapacities"]}
        for params in calls(env, "sagemaker:UpdateEndpointWeightsAndCapacities")
    ]


def stored_route(env: SimpleNamespace) -> Route:
    with env.recorder.off():
        item = env.ddb.get_item(TableName=env.route_table, Key={"model": {"S": "fraud"}, "kind": {"S": "route"}})
    return Route.model_validate_json(item["Item"]["route"]["S"])


def live_variants(env: SimpleNamespace) -> dict[str, float]:
    with env.recorder.off():
        described = env.sm.describe_endpoint(EndpointName=ENDPOINT)
    return {v["VariantName"]: v.get("CurrentWeight", 0.0) for v in described["ProductionVariants"]}


def live_config(env: SimpleNamespace) -> str:
    with env.recorder.off():
        return str(env.sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"])


def config_names(env: SimpleNamespace) -> set[str]:
    with env.recorder.off():
        return {c["EndpointConfigName"] for c in env.sm.list_endpoint_configs()["EndpointConfigs"]}


def model_names(env: SimpleNamespace) -> set[str]:
    with env.recorder.off():
        return {m["ModelName"] for m in env.sm.list_models()["Models"]}


def package_metadata(env: SimpleNamespace, version: str) -> dict[str, str]:
    arn = f"arn:aws:sagemaker:{env.deployed.region}:{env.deployed.account}:model-package/fraud/{version}"
    with env.recorder.off():
        return dict(env.sm.describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"])


# -- the happy path ----------------------------------------------------------------------------------


def test_canary_walks_every_step_then_retires_the_old_variant(aws: SimpleNamespace) -> None:
    gpu_scaling(aws, "v1")
    queue_answers(aws, GOOD_ANSWER)
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
        ("v1", 100.0),  # the weight CloudFormation gave v1
        ("v2", 0.0),
    ]
    new = created["ProductionVariants"][1]
    assert (new["InstanceType"], new["InitialInstanceCount"]) == ("ml.c6i.large", 1)  # dev's v1, from cdk.json
    assert created["DataCaptureConfig"]["EnableCapture"] is True  # capture carried over
    assert created["KmsKeyId"] == aws.deployed.get_att("DataKey5F086070", "Arn")
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
    assert set(live_variants(aws)) == {"v2"}
    assert aws.live_config not in config_names(aws)
    assert not aws.live_models & model_names(aws)
    route = stored_route(aws)
    assert [(v.name, v.weight) for v in route.variants] == [("v2", 100.0)]
    # v1 was taken off autoscaling before the final update (SageMaker refuses otherwise); v2 scales as v1
    # did, its GPU policy tracking its own GPUUtilization.
    expected = {**aws.v1_scaling, "policies": {**aws.v1_scaling["policies"], "GpuUtilization": "v2"}}
    assert scaling(aws) == {"v2": expected}
    assert package_metadata(aws, "2")["rollout"] == "live"
    assert package_metadata(aws, "2")["manifest_uri"]  # the other metadata kept
    assert any("is live" in m for m in notifications(aws))


def test_the_live_endpoint_is_the_one_its_custom_resource_made(aws: SimpleNamespace) -> None:
    """The fixture's endpoint comes from the synthesized template's custom resource, run as
    CloudFormation runs it: the first rollout meets the config and models it created, named under
    the environment's prefix (the workflow's roles are scoped to it), with cdk.json's variants."""
    from tests.aws_rules.account import ENDPOINT_RESOURCE

    (logical,) = aws.deployed.of_type(ENDPOINT_RESOURCE)
    spec = json.loads(aws.deployed.properties(logical)["Spec"])
    assert spec["endpoint"] == ENDPOINT
    assert aws.live_config.startswith("sagegate-dev-fraud-")
    assert all(m.startswith("sagegate-dev-fraud-v1-") for m in aws.live_models) and len(aws.live_models) == 1
    with aws.recorder.off():
        variants = aws.sm.describe_endpoint_config(EndpointConfigName=aws.live_config)["ProductionVariants"]
    assert [(v["VariantName"], v["InstanceType"], v["InitialInstanceCount"]) for v in variants] == [
        (v["name"], v["instance_type"], v["instance_count"]) for v in spec["variants"]
    ]
    # created once, with its autoscaling and alarms, by the handlers' own roles
    assert aws.v1_scaling["capacity"] == (spec["autoscaling"]["min_instances"], spec["autoscaling"]["max_instances"])
    with aws.recorder.off():
        alarms = {a["AlarmName"] for a in aws.cloudwatch.describe_alarms(AlarmNamePrefix=ENDPOINT)["MetricAlarms"]}
    assert {alarm_name(ENDPOINT, "v1", k) for k in ("errors", "latency")} <= alarms
    # and the route that sends the gateway's traffic there (without it every request is a 404)
    assert [(v.name, v.model_version, v.weight) for v in stored_route(aws).variants] == [("v1", "1", 100.0)]


# -- who owns the endpoint: after a rollout, a later `cdk deploy` changes nothing that serves ---------


def _endpoint_request(aws: SimpleNamespace, request: str, **spec_changes: Any) -> dict[str, Any]:
    """The endpoint's custom resource sent `request` as CloudFormation sends it (an Update when a
    later synthesized template differs: here, cdk.json's first variants changed by `spec_changes`)."""
    from tests.aws_rules.account import ENDPOINT_RESOURCE, custom_resource

    (logical,) = aws.deployed.of_type(ENDPOINT_RESOURCE)
    old = aws.deployed.properties(logical)
    spec = json.loads(old["Spec"])
    for name, value in spec_changes.items():
        spec["variants"][0][name] = value
    return custom_resource(
        aws.deployed, aws.recorder, logical, request, properties={**old, "Spec": json.dumps(spec)}, old_properties=old
    )


def test_a_cdk_deploy_after_a_rollout_leaves_the_rolled_out_variants_serving(aws: SimpleNamespace) -> None:
    """cdk.json still names v1 (and now a bigger instance for it): the stack's next deploy must not
    bring v1 back, fail on the config or the scalable target the rollout retired, or touch v2."""
    queue_answers(aws, GOOD_ANSWER)
    assert rollout(aws, "canary-then-deploy")["status"] == "SUCCEEDED"
    before = {"variants": live_variants(aws), "scaling": scaling(aws), "configs": config_names(aws)}
    assert set(before["variants"]) == {"v2"}

    answer = _endpoint_request(aws, "Update", instance_type="ml.c6i.xlarge", instance_count=3)
    assert answer["Data"]["Created"] == "false"
    assert live_variants(aws) == before["variants"]  # v2 serves, as the rollout left it
    assert scaling(aws) == before["scaling"]  # v2 scales; no target for v1 came back
    assert config_names(aws) == before["configs"]  # no config made for cdk.json's v1
    with aws.recorder.off():
        alarms = {a["AlarmName"] for a in aws.cloudwatch.describe_alarms(AlarmNamePrefix=ENDPOINT)["MetricAlarms"]}
    assert not {a for a in alarms if "-v1-" in a}  # the rollout retired v1's alarms; they stay retired


def _serving(aws: SimpleNamespace) -> dict[str, Any]:
    """What serves the endpoint's traffic, and what a rollout leaves beside it."""
    with aws.recorder.off():
        alarms = {a["AlarmName"] for a in aws.cloudwatch.describe_alarms(AlarmNamePrefix=ENDPOINT)["MetricAlarms"]}
    return {
        "config": live_config(aws),
        "variants": live_variants(aws),
        "configs": config_names(aws),
        "models": model_names(aws),
        "scaling": scaling(aws),
        "alarms": alarms,
        "route": stored_route(aws),
    }


@pytest.mark.parametrize("kind", ["canary", "ab", "shadow", "replace", "rollback"])
def test_a_cdk_deploy_after_any_kind_of_rollout_changes_nothing_that_serves(aws: SimpleNamespace, kind: str) -> None:
    """Whatever the last rollout was, with cdk.json still naming v1 (and now a bigger instance for
    it), CloudFormation's next Update neither fails nor changes the endpoint, its config, models,
    scaling, alarms or route: the endpoint is the rollouts' after it was first made."""
    if kind == "rollback":
        Failures.update_endpoint = "insufficient capacity"
        assert rollout(aws, "rollback-then-deploy")["status"] == "FAILED"
        Failures.update_endpoint = None
    elif kind == "shadow":
        _captured(aws, "v1", [("p1", "legit"), ("p2", "fraud")])
        _captured(aws, "v2", [("p1", "legit"), ("p2", "fraud")])
        result = rollout(aws, "shadow-then-deploy", strategy="shadow", steps=[], shadow_seconds=0)
        assert result["status"] == "SUCCEEDED", result
    elif kind == "replace":
        result = rollout(aws, "replace-then-deploy", strategy="replace", steps=[10, 100])
        assert result["status"] == "SUCCEEDED", result
    else:
        queue_answers(aws, GOOD_ANSWER)
        steps = {"canary": [5, 20, 50, 100], "ab": [30]}[kind]
        result = rollout(aws, f"{kind}-then-deploy", strategy=kind, steps=steps)
        assert result["status"] == "SUCCEEDED", result
    before, made = _serving(aws), len(aws.recorder.calls)

    answer = _endpoint_request(aws, "Update", instance_type="ml.c6i.xlarge", instance_count=3)
    assert answer["Data"]["Created"] == "false"
    assert _serving(aws) == before
    changed = [c.operation for c in aws.recorder.calls[made:] if not c.operation.startswith(("Describe", "List"))]
    assert changed == []


def _status(aws: SimpleNamespace, status: str) -> None:
    """What SageMaker shows while an endpoint is busy (moto's endpoints are InService at once)."""
    from moto.sagemaker.models import sagemaker_backends

    sagemaker_backends[aws.deployed.account][aws.deployed.region].endpoints[ENDPOINT].endpoint_status = status


def test_a_deploy_during_a_rollout_neither_waits_for_nor_fails_on_the_busy_endpoint(aws: SimpleNamespace) -> None:
    """A canary's update or bake keeps the endpoint Updating for minutes: an Update that changes
    nothing there must be done at once (waiting would time the stack out, then roll it back)."""
    _status(aws, "Updating")
    answer = _endpoint_request(aws, "Update", instance_count=2)
    assert answer["Data"]["Created"] == "false"
    assert not calls(aws, "sagemaker:CreateEndpoint") and not calls(aws, "sagemaker:UpdateEndpoint")


def test_an_endpoint_deleted_by_hand_is_made_again_without_remaking_what_is_left(aws: SimpleNamespace) -> None:
    """DeleteEndpoint leaves the config and models: the next deploy that changes the model's settings
    (CloudFormation sends an Update only then) makes the endpoint again from them, and does not
    try to create the model and config again (SageMaker refuses 'already existing' names)."""
    with aws.recorder.off():
        aws.sm.delete_endpoint(EndpointName=ENDPOINT)
    answer = _endpoint_request(aws, "Update", instance_count=2)
    assert answer["Data"]["Created"] == "true"
    assert set(live_variants(aws)) == {"v1"}
    assert not calls(aws, "sagemaker:CreateModel")  # the one v1 had is still there, by its name
    (config,) = calls(aws, "sagemaker:CreateEndpointConfig")  # instance_count changed: another config
    assert config["ProductionVariants"][0]["InitialInstanceCount"] == 2


def test_an_endpoint_deleted_by_hand_after_a_rollout_is_made_again_and_routed_to(aws: SimpleNamespace) -> None:
    """After a canary the route names v2; the endpoint made again from cdk.json serves v1: the route
    must name v1 (a route to the gone v2 fails every request), keeping its other settings."""
    queue_answers(aws, GOOD_ANSWER)
    assert rollout(aws, "canary-then-lost")["status"] == "SUCCEEDED"
    tuned = stored_route(aws).model_copy(update={"timeout_ms": 250})
    with aws.recorder.off():
        aws.ddb.update_item(
            TableName=aws.route_table,
            Key={"model": {"S": "fraud"}, "kind": {"S": "route"}},
            UpdateExpression="SET #route = :route",
            ExpressionAttributeNames={"#route": "route"},
            ExpressionAttributeValues={":route": {"S": tuned.model_dump_json()}},
        )
        aws.sm.delete_endpoint(EndpointName=ENDPOINT)
    answer = _endpoint_request(aws, "Update", instance_count=2)
    assert answer["Data"]["Created"] == "true"
    assert set(live_variants(aws)) == {"v1"}
    route = stored_route(aws)
    assert [(v.name, v.model_version, v.weight) for v in route.variants] == [("v1", "1", 100.0)]
    assert (route.endpoint, route.timeout_ms) == (ENDPOINT, 250)


def test_a_delete_of_a_busy_endpoint_waits_until_sagemaker_takes_it(aws: SimpleNamespace) -> None:
    from sagegate.workflows.deploy import endpoint

    def clients(handler: str) -> SimpleNamespace:  # each handler as its own role
        role = aws.deployed.role_of("AWS::Lambda::Function", Handler=f"endpoint_handler.{handler}")
        return SimpleNamespace(
            sagemaker=aws.recorder.client(role, "sagemaker"),
            autoscaling=aws.recorder.client(role, "application-autoscaling"),
            cloudwatch=aws.recorder.client(role, "cloudwatch"),
        )

    _status(aws, "Updating")
    # a Delete carries the resource's own name; its properties may be another version's
    event = {"RequestType": "Delete", "PhysicalResourceId": ENDPOINT, "ResourceProperties": {"Spec": "{}"}}
    answer = endpoint.on_event(event, clients=clients("on_event"))
    assert not calls(aws, "sagemaker:DeleteEndpoint")  # SageMaker refuses it while Updating
    event = {**event, **answer}
    done = clients("is_complete")
    assert endpoint.is_complete(event, clients=done) == {"IsComplete": False}
    _status(aws, "InService")
    assert endpoint.is_complete(event, clients=done) == {"IsComplete": False}  # deleting now
    assert len(calls(aws, "sagemaker:DeleteEndpoint")) == 1
    assert endpoint.is_complete(event, clients=done) == {"IsComplete": True}
    assert not [c for c in config_names(aws) if c.startswith(ENDPOINT)]
    assert not [m for m in model_names(aws) if m.startswith(ENDPOINT)]


def test_a_throttled_registration_is_asked_again_not_failed(aws: SimpleNamespace) -> None:
    from botocore.exceptions import ClientError

    from sagegate.workflows.deploy import endpoint
    from tests.aws_rules.account import ENDPOINT_RESOURCE

    (logical,) = aws.deployed.of_type(ENDPOINT_RESOURCE)
    throttled = ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "PutScalingPolicy")

    class Throttling:
        def __getattr__(self, name: str) -> Any:
            def fail(**_: Any) -> Any:
                raise throttled

            return fail

    clients = SimpleNamespace(sagemaker=aws.sm, autoscaling=Throttling(), cloudwatch=aws.cloudwatch)
    event = {
        "RequestType": "Create",
        "ResourceProperties": aws.deployed.properties(logical),
        "Data": {"Created": "true"},
    }
    with aws.recorder.off():
        assert endpoint.is_complete(event, clients=clients) == {"IsComplete": False}


def test_deleting_the_stack_takes_down_what_is_live_then(aws: SimpleNamespace) -> None:
    """With removal "destroy" the endpoint goes with the stack: whatever rollouts made live (v2), its
    config, its model, its scalable target and its alarms."""
    queue_answers(aws, GOOD_ANSWER)
    assert rollout(aws, "canary-then-delete")["status"] == "SUCCEEDED"
    _endpoint_request(aws, "Delete")
    with aws.recorder.off():
        assert ENDPOINT not in {e["EndpointName"] for e in aws.sm.list_endpoints()["Endpoints"]}
        alarms = aws.cloudwatch.describe_alarms(AlarmNamePrefix=ENDPOINT)["MetricAlarms"]
    assert not [c for c in config_names(aws) if c.startswith(ENDPOINT)]
    assert not [m for m in model_names(aws) if m.startswith(ENDPOINT)]
    assert scaling(aws) == {}
    assert alarms == []


def test_the_stand_in_refuses_to_remove_a_variant_that_still_scales(aws: SimpleNamespace) -> None:
    """What makes the canary above prove the release: without it the final update is refused."""
    with aws.recorder.off():
        aws.sm.create_endpoint_config(
            EndpointConfigName="without-v1",
            ProductionVariants=[
                {
                    "VariantName": "other",
                    "ModelName": next(iter(aws.live_models)),
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": 1,
                    "InitialVariantWeight": 1.0,
                }
            ],
        )
        with pytest.raises(aws.sm.exceptions.ClientError, match="must be deregistered as scalable targets"):
            aws.sm.update_endpoint(EndpointName=ENDPOINT, EndpointConfigName="without-v1")


def test_a_failed_final_update_gives_the_old_variant_its_scaling_back(aws: SimpleNamespace) -> None:
    gpu_scaling(aws, "v1")

    def fail_final(operation: str, params: dict[str, Any]) -> None:
        if operation == "UpdateEndpoint" and "final" in params.get("EndpointConfigName", ""):
            Failures.update_endpoint = "insufficient capacity"

    aws.on_call.append(fail_final)
    queue_answers(aws, GOOD_ANSWER)
    result = rollout(aws, "final-fails")
    assert result["status"] == "FAILED" and "ReapplyScaling" in result["states"], result
    # v2 took all traffic and stays; v1 waits at weight 0 on the ramp config, both scale as v1 did.
    assert set(live_variants(aws)) == {"v1", "v2"}
    found = scaling(aws)
    assert found["v1"]["capacity"] == found["v2"]["capacity"] == aws.v1_scaling["capacity"]
    assert (found["v1"]["policies"]["GpuUtilization"], found["v2"]["policies"]["GpuUtilization"]) == ("v1", "v2")
    sent = notifications(aws)
    assert any("removing the old variant failed" in m for m in sent), sent


def test_routes_follow_the_ramp(aws: SimpleNamespace) -> None:
    queue_answers(aws, GOOD_ANSWER)
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


def test_a_throttled_call_is_retried_not_rolled_back(aws: SimpleNamespace) -> None:
    """SageMaker throttles with an error its API model does not define: Step Functions names it
    SageMaker.SageMakerException, the only name a retrier can match."""
    Failures.throttle = {"UpdateEndpointWeightsAndCapacities": 1, "DescribeEndpoint": 1}
    queue_answers(aws, GOOD_ANSWER)
    result = rollout(aws, "throttled")
    assert result["status"] == "SUCCEEDED", result
    assert Failures.throttle == {"UpdateEndpointWeightsAndCapacities": 0, "DescribeEndpoint": 0}
    assert "Teardown" not in result["states"]


# -- rollbacks ----------------------------------------------------------------------------------------


def test_an_alarm_at_20_percent_rolls_everything_back(aws: SimpleNamespace) -> None:
    queue_answers(aws, GOOD_ANSWER)

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
    assert live_config(aws) == aws.live_config
    assert set(live_variants(aws)) == {"v1"}
    assert [(v.name, v.weight) for v in stored_route(aws).variants] == [("v1", 100.0)]
    assert model_names(aws) == aws.live_models  # the new model is gone, the live ones stay
    assert config_names(aws) == {aws.live_config}
    with aws.recorder.off():
        assert aws.cloudwatch.describe_alarms(AlarmNamePrefix=f"{ENDPOINT}-v2")["MetricAlarms"] == []
    assert package_metadata(aws, "2")["rollout"] == "rolled_back"


def test_a_failing_smoke_test_rolls_back_before_any_traffic(aws: SimpleNamespace) -> None:
    queue_answers(aws, json.dumps({"predictions": [{"prediction": 0.1}]}))  # one answer for two records
    result = rollout(aws, "canary-smoke")
    assert result["status"] == "FAILED"
    assert "SmokeTestFailed" in result["error"]["error"] or "SmokeTestFailed" in result["error"]["cause"]
    assert "1 predictions for 2 records" in result["error"]["cause"]
    assert weight_updates(aws) == [{"v1": 100.0, "v2": 0.0}]  # only the rollback's own reset
    _assert_rolled_back(aws)


def test_a_failed_endpoint_update_rolls_back(aws: SimpleNamespace) -> None:
    Failures.update_endpoint = "the primary container for variant v2 did not pass the ping health check"
    result = rollout(aws, "canary-update-fails")
    assert result["status"] == "FAILED"
    assert result["error"]["error"] == "EndpointUpdateFailed"
    assert aws.live_config in result["error"]["cause"]
    assert calls(aws, "sagemaker-runtime:InvokeEndpoint") == []  # no smoke test on a failed update
    _assert_rolled_back(aws)


def test_a_version_that_is_not_approved_is_refused_without_changes(aws: SimpleNamespace) -> None:
    register(aws, "3", approved=False)
    result = rollout(aws, "not-approved", version="3")
    assert result["status"] == "FAILED"
    assert result["error"]["error"] == "NotApproved"
    assert calls(aws, "sagemaker:CreateModel") == [] and calls(aws, "sagemaker:UpdateEndpoint") == []
    assert any("was not deployed" in m for m in notifications(aws))


# -- idempotency, and the registry events the workflow's own updates cause ------------------------------


def test_a_duplicate_start_does_not_roll_out_twice(aws: SimpleNamespace) -> None:
    queue_answers(aws, GOOD_ANSWER)
    assert rollout(aws, "first")["status"] == "SUCCEEDED"
    before = len(aws.recorder.calls)
    second = rollout(aws, "duplicate-event")
    assert second["status"] == "SUCCEEDED"
    assert second["states"][-1] == "Duplicate"
    changes = [
        c.operation for c in aws.recorder.calls[before:] if c.operation.startswith(("Create", "Update", "Delete"))
    ]
    assert changes == []


def test_a_rolled_back_version_can_be_tried_again_when_asked(aws: SimpleNamespace) -> None:
    Failures.update_endpoint = "capacity"
    assert rollout(aws, "try-1")["status"] == "FAILED"
    Failures.update_endpoint = None
    queue_answers(aws, GOOD_ANSWER)
    assert rollout(aws, "try-2", trigger="manual")["status"] == "SUCCEEDED"
    assert set(live_variants(aws)) == {"v2"}


def _approval_event_input(aws: SimpleNamespace, version: str, status: str = "Approved") -> dict[str, Any]:
    """The input the synthesized EventBridge rule gives the workflow for a registry event of this
    version (the event as SageMaker sends it, transformed by the rule's own InputTransformer)."""
    from tests.aws_rules.events import rule_input

    return rule_input(aws.deployed, "fraud", int(version), status)


def test_the_registry_event_of_the_workflows_own_update_starts_nothing(aws: SimpleNamespace) -> None:
    """Recording the outcome updates the package, and SageMaker sends a state-change event with it,
    still Approved: that event must not deploy the rolled-back version again."""
    Failures.update_endpoint = "capacity"
    first = run_execution(aws, aws.deploy_machine, "approved", {**_approval_event_input(aws, "2"), "poll_seconds": 0})
    assert first["status"] == "FAILED"
    assert calls(aws, "sagemaker:UpdateModelPackage")  # the update that makes the event
    assert all("ModelApprovalStatus" not in c for c in calls(aws, "sagemaker:UpdateModelPackage"))
    Failures.update_endpoint = None
    before = len(aws.recorder.calls)
    echo = run_execution(aws, aws.deploy_machine, "echo", {**_approval_event_input(aws, "2"), "poll_seconds": 0})
    assert (echo["status"], echo["states"][-1]) == ("SUCCEEDED", "Duplicate"), echo
    changes = [
        c.operation for c in aws.recorder.calls[before:] if c.operation.startswith(("Create", "Update", "Delete"))
    ]
    assert changes == []


def test_rejecting_then_approving_again_retries_a_rolled_back_version(aws: SimpleNamespace) -> None:
    Failures.update_endpoint = "capacity"
    assert (
        run_execution(aws, aws.deploy_machine, "a1", {**_approval_event_input(aws, "2"), "poll_seconds": 0})["status"]
        == "FAILED"
    )
    Failures.update_endpoint = None
    rejected = run_execution(aws, aws.deploy_machine, "r1", _approval_event_input(aws, "2", "Rejected"))
    assert (rejected["status"], rejected["states"][-1]) == ("SUCCEEDED", "Forgotten"), rejected
    queue_answers(aws, GOOD_ANSWER)
    again = run_execution(
        aws,
        aws.deploy_machine,
        "a2",
        {**_approval_event_input(aws, "2"), "poll_seconds": 0, "bake_seconds": 0, "retention_seconds": 0},
    )
    assert again["status"] == "SUCCEEDED", again
    assert set(live_variants(aws)) == {"v2"}


# -- A/B, shadow, replace -------------------------------------------------------------------------------


def test_ab_stops_at_its_share_and_keeps_both_variants(aws: SimpleNamespace) -> None:
    queue_answers(aws, GOOD_ANSWER)
    result = rollout(aws, "ab", strategy="ab", steps=[30])
    assert result["status"] == "SUCCEEDED", result
    assert weight_updates(aws) == [{"v1": 70.0, "v2": 30.0}]
    assert set(live_variants(aws)) == {"v1", "v2"}
    assert {v.name: v.weight for v in stored_route(aws).variants} == {"v1": 70.0, "v2": 30.0}
    assert scaling(aws) == {"v1": aws.v1_scaling, "v2": aws.v1_scaling}


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
    with aws.recorder.off():
        assert json.loads(aws.s3.get_object(Bucket=bucket, Key=key)["Body"].read())["agreement"]["rate"] == 0.75
    assert live_config(aws) == aws.live_config
    assert package_metadata(aws, "2")["rollout"] == "shadowed"
    assert any("shadowed" in m and report["uri"] in m for m in notifications(aws))


def test_shadow_then_canary_continues_into_the_ramp(aws: SimpleNamespace) -> None:
    queue_answers(aws, GOOD_ANSWER)
    result = rollout(aws, "shadow-canary", strategy="shadow", steps=[], shadow_seconds=0, after_shadow="canary")
    assert result["status"] == "SUCCEEDED", result
    assert [u["v2"] for u in weight_updates(aws)] == [5.0, 20.0, 50.0, 100.0]
    assert set(live_variants(aws)) == {"v2"}
    assert all("final" in c for c in config_names(aws)), config_names(aws)  # original, shadow and ramp retired


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
    assert config["ProductionVariants"][0]["ModelName"] not in aws.live_models
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
    with aws.recorder.off():
        config = aws.sm.describe_endpoint_config(EndpointConfigName=aws.live_config)
        bucket, _, prefix = config["DataCaptureConfig"]["DestinationS3Uri"].removeprefix("s3://").partition("/")
        aws.s3.put_object(
            Bucket=bucket,
            Key=f"{prefix}/{ENDPOINT}/{variant}/2026/11/28/15/part-0.jsonl",
            Body="\n".join(lines).encode(),
        )
