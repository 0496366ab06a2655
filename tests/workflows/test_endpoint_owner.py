"""The endpoint custom resource of prod (sagegate.workflows.deploy.endpoint), run as CloudFormation
runs it (tests/aws_rules/account.py `custom_resource`) in a moto account built from prod's
synthesized template: what it creates is what the settings say (encryption, capture, isolation,
scaling, alarms), and its roles allow every call it makes. What this cannot prove: the provider
framework's relaying, and SageMaker's timing (moto's endpoints are InService at once)."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from moto import mock_aws

from infra.config import CONTEXT_KEY, load_environments
from sagegate.workflows.deploy import alarm_name
from tests.aws_rules.account import ENDPOINT_RESOURCE, Recorder, build_account
from tests.aws_rules.template import synthesized
from tests.multi_account import pinned_context


@pytest.fixture(scope="module")
def prod() -> Iterator[SimpleNamespace]:
    from moto.sagemaker.models import FakeEndpointConfig

    from tests.workflows.conftest import _validate_instance_type  # botocore's list, not moto's older one

    deployed = synthesized("prod", pinned=True)
    recorder = Recorder(deployed)
    with pytest.MonkeyPatch.context() as patch, mock_aws():
        patch.setattr(FakeEndpointConfig, "validate_instance_type", _validate_instance_type)
        patch.setenv("MOTO_ACCOUNT_ID", deployed.account)
        built = build_account(deployed, recorder)
        session = built["session"]
        yield SimpleNamespace(
            deployed=deployed,
            recorder=recorder,
            sm=session.client("sagemaker"),
            autoscaling=session.client("application-autoscaling"),
            cloudwatch=session.client("cloudwatch"),
        )
        recorder.assert_allowed()
        recorder.assert_valid()


def _settings() -> dict[str, dict[str, object]]:
    context = pinned_context()
    config = load_environments(context[CONTEXT_KEY])["prod"]
    return {m.name: m.model_dump() for m in config.models} | {"_alarms": config.alarms.model_dump()}


def test_every_configured_endpoint_is_created_as_the_settings_say(prod: SimpleNamespace) -> None:
    settings = _settings()
    assert len(prod.deployed.of_type(ENDPOINT_RESOURCE)) == len(settings) - 1
    key = prod.deployed.get_att("DataKey5F086070", "Arn")
    for model, wanted in settings.items():
        if model == "_alarms":
            continue
        endpoint = f"sagegate-prod-{model}"
        described = prod.sm.describe_endpoint(EndpointName=endpoint)
        config = prod.sm.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
        assert config["KmsKeyId"] == key
        capture = config["DataCaptureConfig"]
        assert (capture["EnableCapture"], capture["InitialSamplingPercentage"]) == (
            True,
            wanted["data_capture_percent"],
        )
        assert capture["KmsKeyId"] == key and capture["DestinationS3Uri"].endswith("/capture")
        variants = wanted["variants"]
        assert [
            (v["VariantName"], v["InstanceType"], v["InitialInstanceCount"]) for v in config["ProductionVariants"]
        ] == [
            (v["name"], v["instance_type"], v["instance_count"])
            for v in variants  # type: ignore[attr-defined]
        ]
        created = {c.params["ModelName"]: c.params for c in prod.recorder.calls if c.operation == "CreateModel"}
        for variant in config["ProductionVariants"]:
            made = created[variant["ModelName"]]  # (moto's DescribeModel does not keep the isolation flag)
            assert made["EnableNetworkIsolation"] is True
            assert made["PrimaryContainer"] == {
                "ModelPackageName": next(
                    v["model_package_arn"]
                    for v in variants
                    if v["name"] == variant["VariantName"]  # type: ignore[attr-defined]
                )
            }
            assert made["ModelName"].startswith(f"{endpoint}-")  # under the prefix the workflow's roles name


def test_each_first_variant_scales_and_has_its_alarms(prod: SimpleNamespace) -> None:
    settings = _settings()
    thresholds = settings["_alarms"]
    for model, wanted in settings.items():
        if model == "_alarms":
            continue
        endpoint, bounds = f"sagegate-prod-{model}", wanted["autoscaling"]
        for variant in wanted["variants"]:  # type: ignore[attr-defined]
            resource = f"endpoint/{endpoint}/variant/{variant['name']}"
            (target,) = prod.autoscaling.describe_scalable_targets(
                ServiceNamespace="sagemaker", ResourceIds=[resource]
            )["ScalableTargets"]
            assert (target["MinCapacity"], target["MaxCapacity"]) == (bounds["min_instances"], bounds["max_instances"])  # type: ignore[index]
            policies = {
                p["PolicyName"]: p["TargetTrackingScalingPolicyConfiguration"]
                for p in prod.autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=resource)[
                    "ScalingPolicies"
                ]
            }
            invocations = policies["invocations-per-instance"]
            assert invocations["TargetValue"] == bounds["invocations_per_instance"]  # type: ignore[index]
            assert invocations["PredefinedMetricSpecification"]["PredefinedMetricType"] == (
                "SageMakerVariantInvocationsPerInstance"
            )
            if variant["gpus"]:  # GPUUtilization is summed over the GPUs: the target is per GPU x count
                gpu = policies["gpu-utilization"]
                assert gpu["TargetValue"] == bounds["gpu_utilization_percent"] * variant["gpus"]  # type: ignore[index]
                assert {"Name": "VariantName", "Value": variant["name"]} in gpu["CustomizedMetricSpecification"][
                    "Dimensions"
                ]
            else:
                assert "gpu-utilization" not in policies
            (latency,) = prod.cloudwatch.describe_alarms(AlarmNames=[alarm_name(endpoint, variant["name"], "latency")])[
                "MetricAlarms"
            ]
            assert latency["Threshold"] == thresholds["max_p99_latency_ms"] * 1000  # type: ignore[index]
            assert latency["AlarmActions"] == [prod.deployed.ref(next(iter(prod.deployed.of_type("AWS::SNS::Topic"))))]
