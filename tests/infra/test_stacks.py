"""The CDK app synthesized for every environment of cdk.json, checked with aws_cdk.assertions.

Lambda bundling is skipped here (context aws:cdk:bundling-stacks = []): it runs pip for the Lambda's
platform, which `cdk synth` does for real."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk
from aws_cdk.assertions import Capture, Match, Template

from infra.app import build
from infra.config import CONTEXT_KEY, ConfigError, load_environments
from infra.constructs.api import ROUTES
from sagegate.workflows.definitions import placeholders

ROOT = Path(__file__).resolve().parents[2]
CONTEXT = json.loads((ROOT / "cdk.json").read_text())["context"]


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Template]:
    app = cdk.App(context={**CONTEXT, "aws:cdk:bundling-stacks": []}, outdir=str(tmp_path_factory.mktemp("cdk.out")))
    stacks = build(app, nag=False)
    return {name: Template.from_stack(stack) for name, stack in stacks.items()}


def _statements(template: Template, role: str) -> list[dict[str, Any]]:
    """The statements of the policy on the role whose logical id starts with `role` (its path)."""
    statements = Capture()
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {"Roles": [{"Ref": Match.string_like_regexp(role)}], "PolicyDocument": {"Statement": statements}},
    )
    found: list[dict[str, Any]] = statements.as_array()
    return found


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    return {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}


def test_every_environment_synthesizes(templates: dict[str, Template]) -> None:
    assert set(templates) == {"dev", "staging", "prod"}
    envs = load_environments(CONTEXT[CONTEXT_KEY])
    for name, template in templates.items():
        template.resource_count_is("AWS::SageMaker::Endpoint", len(envs[name].models))


def test_a_bad_setting_names_the_environment_and_the_field() -> None:
    broken = json.loads(json.dumps(CONTEXT[CONTEXT_KEY]))
    broken["dev"]["models"][0]["variants"][0]["instance_type"] = "m5.large"
    with pytest.raises(ConfigError, match=r"environment 'dev': models.0.variants.0.instance_type"):
        load_environments(broken)
    zones = json.loads(json.dumps(CONTEXT[CONTEXT_KEY]))
    zones["prod"]["availability_zones"] = ["eu-west-1a", "us-east-1b", "eu-west-1c"]
    with pytest.raises(ConfigError, match=r"environment 'prod': .*zones of eu-west-1"):
        load_environments(zones)


def test_endpoints_encrypt_capture_and_scale(templates: dict[str, Template]) -> None:
    prod = templates["prod"]
    prod.has_resource_properties(
        "AWS::SageMaker::EndpointConfig",
        {
            "KmsKeyId": Match.any_value(),
            "DataCaptureConfig": Match.object_like({"EnableCapture": True, "InitialSamplingPercentage": 20}),
        },
    )
    prod.has_resource_properties("AWS::SageMaker::Model", {"EnableNetworkIsolation": True})
    prod.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        {
            "TargetTrackingScalingPolicyConfiguration": Match.object_like(
                {
                    "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
                    "TargetValue": 3000,
                }
            )
        },
    )
    # The GPU variant (1 GPU) tracks GPUUtilization at 70 x GPU count.
    prod.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        {
            "TargetTrackingScalingPolicyConfiguration": Match.object_like(
                {
                    "CustomizedMetricSpecification": Match.object_like({"MetricName": "GPUUtilization"}),
                    "TargetValue": 70,
                }
            )
        },
    )
    prod.has_resource_properties(
        "AWS::CloudWatch::Alarm", {"AlarmName": "sagegate-prod-fraud-v1-latency", "Threshold": 150_000}
    )


def test_storage_is_encrypted_private_and_tls_only(templates: dict[str, Template]) -> None:
    dev = templates["dev"]
    buckets = dev.find_resources("AWS::S3::Bucket")
    assert len(buckets) == 5
    for bucket in buckets.values():
        props = bucket["Properties"]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    policies = dev.find_resources("AWS::S3::BucketPolicy")
    denies = [
        s
        for p in policies.values()
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
    ]
    assert len(denies) == 5
    dev.has_resource_properties(
        "AWS::ElastiCache::ReplicationGroup",
        {
            "TransitEncryptionEnabled": True,
            "AtRestEncryptionEnabled": True,
            "AuthToken": Match.any_value(),
            "MultiAZEnabled": True,
        },
    )
    # The AUTH token rotates every 30 days by our Lambda (in the VPC, allowed to modify this group only).
    dev.has_resource_properties(
        "AWS::SecretsManager::RotationSchedule",
        {"RotationLambdaARN": Match.any_value(), "RotationRules": {"ScheduleExpression": "rate(30 days)"}},
    )
    modify = next(
        s for s in _statements(dev, "CacheRotationRotationRole") if "elasticache:ModifyReplicationGroup" in s["Action"]
    )
    assert "replicationgroup:sagegate-dev-cache" in json.dumps(modify["Resource"])
    dev.has_resource_properties(
        "AWS::DynamoDB::GlobalTable", {"SSESpecification": Match.object_like({"SSEEnabled": True})}
    )


def test_the_api_authenticates_throttles_and_runs_the_gateway_in_the_vpc(templates: dict[str, Template]) -> None:
    dev, prod = templates["dev"], templates["prod"]
    for method in dev.find_resources("AWS::ApiGateway::Method").values():
        assert method["Properties"]["ApiKeyRequired"] is True
    for method in prod.find_resources("AWS::ApiGateway::Method").values():
        assert method["Properties"]["AuthorizationType"] == "AWS_IAM"
    dev.has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "MethodSettings": Match.array_with(
                [Match.object_like({"ThrottlingRateLimit": 50, "ThrottlingBurstLimit": 100})]
            ),
            "AccessLogSetting": Match.any_value(),
        },
    )
    env = Capture()
    dev.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": "gateway_handler.handler",
            "Runtime": "python3.12",
            "VpcConfig": Match.any_value(),
            "Environment": {"Variables": env},
        },
    )
    assert {"SAGEGATE_ROUTE_TABLE", "SAGEGATE_GATEWAY_REDIS_URL", "SAGEGATE_GATEWAY_REDIS_AUTH_SECRET_ARN"} <= set(
        env.as_object()
    )
    prod.has_resource_properties(
        "AWS::Lambda::Alias", {"ProvisionedConcurrencyConfig": {"ProvisionedConcurrentExecutions": 10}}
    )


def test_the_edge_serves_the_gateways_routes_only_and_checks_requests(templates: dict[str, Template]) -> None:
    from fastapi.routing import APIRoute

    from sagegate.gateway.app import create_app
    from sagegate.gateway.config import GatewaySettings

    app = create_app(GatewaySettings())
    served = {(r.path, m) for r in app.routes if isinstance(r, APIRoute) for m in r.methods}
    # Plus the OpenAPI document; the Swagger UI (/docs, assets from a CDN) stays off the edge.
    assert {(path, m) for path, methods in ROUTES.items() for m in methods} == served | {("/openapi.json", "GET")}

    dev = templates["dev"]
    paths = {r["Properties"]["PathPart"] for r in dev.find_resources("AWS::ApiGateway::Resource").values()}
    assert "{proxy+}" not in paths and {"predict", "{name}", "{job_id}"} <= paths
    dev.has_resource_properties(
        "AWS::ApiGateway::RequestValidator", {"ValidateRequestBody": True, "ValidateRequestParameters": True}
    )
    dev.has_resource_properties(
        "AWS::ApiGateway::Method",
        {"HttpMethod": "GET", "RequestParameters": {"method.request.path.job_id": True}},
    )
    schema = Capture()
    dev.has_resource_properties("AWS::ApiGateway::Model", {"Schema": schema})
    assert schema.as_object()["type"] == "object"
    posts = [
        m for m in dev.find_resources("AWS::ApiGateway::Method").values() if m["Properties"]["HttpMethod"] == "POST"
    ]
    assert len(posts) == 3 and all("application/json" in m["Properties"]["RequestModels"] for m in posts)
    dev.has_resource_properties(
        "AWS::ApiGateway::GatewayResponse", {"ResponseType": "BAD_REQUEST_BODY", "StatusCode": "422"}
    )


def test_prod_puts_waf_with_managed_rules_in_front_of_the_stage(templates: dict[str, Template]) -> None:
    templates["dev"].resource_count_is("AWS::WAFv2::WebACL", 0)  # dev: waf false
    prod = templates["prod"]
    rules = Capture()
    prod.has_resource_properties("AWS::WAFv2::WebACL", {"Scope": "REGIONAL", "Rules": rules})
    groups = {r["Name"] for r in rules.as_array()}
    assert {"AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet", "RatePerIp"} <= groups
    rate = next(r for r in rules.as_array() if r["Name"] == "RatePerIp")
    assert rate["Statement"]["RateBasedStatement"]["Limit"] == 100000
    prod.resource_count_is("AWS::WAFv2::WebACLAssociation", 1)


def test_roles_are_written_out_not_managed_or_wildcard_actions(templates: dict[str, Template]) -> None:
    dev = templates["dev"]
    for name, role in dev.find_resources("AWS::IAM::Role").items():
        managed = role["Properties"].get("ManagedPolicyArns", [])
        # The exceptions: API Gateway's account-level logging role (acknowledged) and, where buckets
        # are destroyed with the stack (dev), CDK's own auto-delete-objects provider.
        assert not managed or "CloudWatchRole" in name or name.startswith("CustomS3AutoDeleteObjects"), name
    granted = _actions(_statements(dev, "ApiGatewayRole"))
    assert "s3:GetObject" in granted and not any(a.endswith("*") for a in granted)
    assert {"logs:CreateLogStream", "logs:PutLogEvents", "sagemaker:InvokeEndpoint"} <= granted


def test_the_deployment_lambda_may_hand_autoscaling_over_between_variants(templates: dict[str, Template]) -> None:
    granted = _actions(_statements(templates["prod"], "RolloutsDeployLogicRole"))
    assert {
        "application-autoscaling:RegisterScalableTarget",
        "application-autoscaling:DeregisterScalableTarget",
        "application-autoscaling:PutScalingPolicy",
        "sagemaker:DescribeEndpoint",
        "cloudwatch:PutMetricAlarm",
    } <= granted


def test_state_machines_get_every_placeholder_of_their_definition(templates: dict[str, Template]) -> None:
    machines = templates["staging"].find_resources("AWS::StepFunctions::StateMachine")
    by_name: dict[str, Any] = {}
    for machine in machines.values():
        props = machine["Properties"]
        by_name[props["StateMachineName"]] = props
    assert set(by_name) == {"sagegate-staging-deploy-model", "sagegate-staging-batch-inference"}
    for name, definition in (("deploy_model", "deploy-model"), ("batch_inference", "batch-inference")):
        props = by_name[f"sagegate-staging-{definition}"]
        assert set(props["DefinitionSubstitutions"]) == placeholders(name)
        assert props["LoggingConfiguration"]["Level"] == "ALL" and props["TracingConfiguration"]["Enabled"]
    assert by_name["sagegate-staging-deploy-model"]["DefinitionSubstitutions"]["EndpointPrefix"] == "sagegate-staging-"
