"""The CDK app synthesized for every environment of cdk.json, checked with aws_cdk.assertions.

Lambda bundling is skipped here (context aws:cdk:bundling-stacks = []): it runs pip for the Lambda's
platform, which `cdk synth` does for real."""

from __future__ import annotations

import fnmatch
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
from sagegate.workflows.deploy import alarm_name
from sagegate.workflows.deploy.alarms import ALARM_KINDS
from tests.multi_account import pinned_context

ROOT = Path(__file__).resolve().parents[2]
CONTEXT = json.loads((ROOT / "cdk.json").read_text())["context"]
ENVIRONMENTS = load_environments(CONTEXT[CONTEXT_KEY])


@pytest.fixture(scope="module")
def outdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cdk.out")


@pytest.fixture(scope="module")
def templates(outdir: Path) -> dict[str, Template]:
    app = cdk.App(context={**CONTEXT, "aws:cdk:bundling-stacks": []}, outdir=str(outdir))
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


def _only(template: Template, kind: str) -> tuple[str, dict[str, Any]]:
    (found,) = template.find_resources(kind).items()
    return found


def _key_statements(template: Template, service: str) -> list[dict[str, Any]]:
    """The statements of the environment's key policy that name `service` (a service principal)."""
    _, key = _only(template, "AWS::KMS::Key")
    return [s for s in key["Properties"]["KeyPolicy"]["Statement"] if s.get("Principal") == {"Service": service}]


def _text(value: Any) -> str:
    """A template value as CloudFormation resolves it in the aws partition (Fn::Join of literals, the partition)."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(_text(p) for p in parts)
    assert value == {"Ref": "AWS::Partition"}, value
    return "aws"


def _depends_on(resources: dict[str, Any], logical_id: str) -> set[str]:
    """Every resource that `logical_id` waits for: DependsOn, Ref and Fn::GetAtt, followed to the end."""

    def direct(resource: dict[str, Any]) -> set[str]:
        found = set(resource.get("DependsOn", []))

        def walk(value: Any) -> None:
            if isinstance(value, dict):
                if isinstance(value.get("Ref"), str):
                    found.add(value["Ref"])
                if "Fn::GetAtt" in value:
                    found.add(value["Fn::GetAtt"][0])
                for v in value.values():
                    walk(v)
            elif isinstance(value, list):
                for v in value:
                    walk(v)

        walk(resource.get("Properties", {}))
        return {f for f in found if f in resources}

    seen: set[str] = set()
    todo = [logical_id]
    while todo:
        for found in direct(resources[todo.pop()]) - seen:
            seen.add(found)
            todo.append(found)
    return seen


def test_every_environment_synthesizes(templates: dict[str, Template]) -> None:
    assert set(templates) == {"dev", "staging", "prod"}
    envs = load_environments(CONTEXT[CONTEXT_KEY])
    for name, template in templates.items():
        template.resource_count_is("Custom::SagegateEndpoint", len(envs[name].models))


def test_the_endpoints_live_variants_have_one_owner_the_rollouts(templates: dict[str, Template]) -> None:
    """CloudFormation creates each endpoint once, through its custom resource, and owns nothing a
    rollout changes: no endpoint, config, model, scalable target or variant alarm of its own, which a
    later `cdk deploy` would put back (or fail on, once a rollout retired them)."""
    envs = load_environments(CONTEXT[CONTEXT_KEY])
    for name, template in templates.items():
        for kind in (
            "AWS::SageMaker::Endpoint",
            "AWS::SageMaker::EndpointConfig",
            "AWS::SageMaker::Model",
            "AWS::ApplicationAutoScaling::ScalableTarget",
            "AWS::ApplicationAutoScaling::ScalingPolicy",
        ):
            template.resource_count_is(kind, 0)
        assert not [
            a
            for a in template.find_resources("AWS::CloudWatch::Alarm").values()
            if str(a["Properties"].get("AlarmName", "")).startswith(f"sagegate-{name}-")
            # the variants' alarms (not the monitoring workflow's, on its own metrics)
            and a["Properties"].get("Namespace") not in ("Sagegate/Monitoring", "AWS/States", "AWS/Firehose")
        ]
        resources = template.find_resources("Custom::SagegateEndpoint")
        specs = {json.loads(r["Properties"]["Spec"])["endpoint"]: r for r in resources.values()}
        assert set(specs) == {f"sagegate-{name}-{m.name}" for m in envs[name].models}
        policy = "Delete" if envs[name].removal == "destroy" else "Retain"
        assert {(r["DeletionPolicy"], r["UpdateReplacePolicy"]) for r in specs.values()} == {(policy, policy)}
        for resource in specs.values():  # it runs once the role it passes can pull and read
            assert any("ExecutionRole" in d for d in resource["DependsOn"])


def test_a_bad_setting_names_the_environment_and_the_field() -> None:
    broken = json.loads(json.dumps(CONTEXT[CONTEXT_KEY]))
    broken["dev"]["models"][0]["instance_type"] = "m5.large"
    with pytest.raises(ConfigError, match=r"environment 'dev': models.0.instance_type"):
        load_environments(broken)
    unserved = json.loads(json.dumps(CONTEXT[CONTEXT_KEY]))
    del unserved["dev"]["models"][0]["instance_type"]
    with pytest.raises(ConfigError, match=r"environment 'dev': models.0: .*instance_type is required"):
        load_environments(unserved)
    both = json.loads(json.dumps(pinned_context()[CONTEXT_KEY]))
    both["dev"]["models"][0]["instance_type"] = "ml.c6i.large"
    with pytest.raises(ConfigError, match=r"environment 'dev': models.0: .*instance_type .* or variants, not both"):
        load_environments(both)
    zones = json.loads(json.dumps(CONTEXT[CONTEXT_KEY]))
    zones["prod"]["availability_zones"] = ["eu-west-1a", "us-east-1b", "eu-west-1c"]
    with pytest.raises(ConfigError, match=r"environment 'prod': .*zones of eu-west-1"):
        load_environments(zones)


def test_storage_is_encrypted_private_and_tls_only(templates: dict[str, Template]) -> None:
    dev = templates["dev"]
    buckets = dev.find_resources("AWS::S3::Bucket")
    assert len(buckets) == 5
    for bucket in buckets.values():
        props = bucket["Properties"]
        # Versioned, and what a delete or an overwrite replaced is kept for a while, then expires.
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}
        assert all(r.get("NoncurrentVersionExpiration") for r in props["LifecycleConfiguration"]["Rules"])
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
    assert len(posts) == 4 and all("application/json" in m["Properties"]["RequestModels"] for m in posts)
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
        # The exceptions: API Gateway's account-level logging role (acknowledged), where buckets are
        # destroyed with the stack (dev) CDK's own auto-delete-objects provider, and the CDK provider
        # framework's own functions (custom_resources.Provider: `framework-*`), which relay to ours.
        cdk_own = name.startswith("CustomS3AutoDeleteObjects") or ("framework" in name and "ServiceRole" in name)
        assert not managed or "CloudWatchRole" in name or cdk_own, name
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
        if "StateMachineName" in props:  # not CDK's provider waiters (custom resources), which are its own
            by_name[props["StateMachineName"]] = props
    assert set(by_name) == {
        "sagegate-staging-deploy-model",
        "sagegate-staging-batch-inference",
        "sagegate-staging-monitor",
    }
    for name, definition in (
        ("deploy_model", "deploy-model"),
        ("batch_inference", "batch-inference"),
        ("monitor", "monitor"),
    ):
        props = by_name[f"sagegate-staging-{definition}"]
        assert set(props["DefinitionSubstitutions"]) == placeholders(name)
        assert props["LoggingConfiguration"]["Level"] == "ALL" and props["TracingConfiguration"]["Enabled"]
    assert by_name["sagegate-staging-deploy-model"]["DefinitionSubstitutions"]["EndpointPrefix"] == "sagegate-staging-"


def test_cloudwatch_alarms_may_publish_to_the_encrypted_alarm_topic(templates: dict[str, Template]) -> None:
    for name, template in templates.items():
        env = ENVIRONMENTS[name]
        key_id, _ = _only(template, "AWS::KMS::Key")
        topic_id, topic = _only(template, "AWS::SNS::Topic")
        assert topic["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
        # The key: CloudWatch makes and reads the message's data key (else SNS refuses the alarm's publish).
        assert {"kms:Decrypt", "kms:GenerateDataKey*"} <= _actions(
            _key_statements(template, "cloudwatch.amazonaws.com")
        )
        # The topic's policy replaces SNS's default one: it must let CloudWatch publish, for this environment's alarms.
        _, policy = _only(template, "AWS::SNS::TopicPolicy")
        assert policy["Properties"]["Topics"] == [{"Ref": topic_id}]
        (allow,) = [
            s
            for s in policy["Properties"]["PolicyDocument"]["Statement"]
            if s["Effect"] == "Allow" and s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
        ]
        assert allow["Action"] == "sns:Publish" and allow["Resource"] == {"Ref": topic_id}
        pattern = _text(allow["Condition"]["ArnLike"]["aws:SourceArn"])
        notifying = {
            alarm["Properties"]["AlarmName"]
            for alarm in template.find_resources("AWS::CloudWatch::Alarm").values()
            if {"Ref": topic_id} in alarm["Properties"].get("AlarmActions", [])
        }
        # and the alarms the deployment workflow makes for each variant (sagegate.workflows.deploy.alarms):
        # the pinned ones, or the first version's (v1) of a model configured by how it is served
        made = {
            alarm_name(f"{env.prefix}-{m.name}", variant, kind)
            for m in env.models
            for variant in [v.name for v in m.variants] or ["v1"]
            for kind in ALARM_KINDS
        }
        assert made
        for alarm in notifying | made:
            assert fnmatch.fnmatchcase(f"arn:aws:cloudwatch:{env.region}:{env.account}:alarm:{alarm}", pattern), alarm
        assert not fnmatch.fnmatchcase(f"arn:aws:cloudwatch:{env.region}:{env.account}:alarm:other-alarm", pattern)


def test_every_log_group_is_encrypted_with_the_key_that_cloudwatch_logs_may_use(
    templates: dict[str, Template],
) -> None:
    for name, template in templates.items():
        env = ENVIRONMENTS[name]
        key_id, _ = _only(template, "AWS::KMS::Key")
        groups = template.find_resources("AWS::Logs::LogGroup")
        unencrypted = [
            g for g, group in groups.items() if group["Properties"].get("KmsKeyId") != {"Fn::GetAtt": [key_id, "Arn"]}
        ]
        assert groups and not unencrypted, unencrypted
        # The state machines' logs (with execution data) are among them.
        machines = template.find_resources("AWS::StepFunctions::StateMachine").values()
        logging = [
            m["Properties"]["LoggingConfiguration"] for m in machines if "LoggingConfiguration" in m["Properties"]
        ]
        assert len(logging) >= 2
        for config in logging:
            (destination,) = config["Destinations"]
            assert destination["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0] in groups
        # AWS's form: the regional service principal, for the log groups of this account and region only.
        assert not _key_statements(template, "logs.amazonaws.com")
        (statement,) = _key_statements(template, f"logs.{env.region}.amazonaws.com")
        assert {"kms:Encrypt*", "kms:Decrypt*", "kms:GenerateDataKey*"} <= _actions([statement])
        context = _text(statement["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"])
        assert context == f"arn:aws:logs:{env.region}:{env.account}:log-group:*"


def test_secrets_manager_may_invoke_the_rotation_for_its_one_secret_in_this_account(
    templates: dict[str, Template],
) -> None:
    for name, template in templates.items():
        secret_id, _ = _only(template, "AWS::SecretsManager::Secret")
        _, schedule = _only(template, "AWS::SecretsManager::RotationSchedule")
        (permission,) = [
            p["Properties"]
            for p in template.find_resources("AWS::Lambda::Permission").values()
            if p["Properties"]["Principal"] == "secretsmanager.amazonaws.com"
        ]
        assert permission["FunctionName"] == schedule["Properties"]["RotationLambdaARN"]
        assert permission["SourceAccount"] == ENVIRONMENTS[name].account
        assert permission["SourceArn"] == {"Ref": secret_id}


def test_each_state_machine_definition_sets_its_own_execution_timeout(
    templates: dict[str, Template], outdir: Path
) -> None:
    """CDK's `timeout` applies only to definitions that CDK builds: a definition from a file carries its own
    TimeoutSeconds, or the execution may run for a year. Read here as it is deployed: the definition asset."""
    for template in templates.values():
        machines = {  # ours, not the CDK provider framework's waiters (custom resources)
            k: m
            for k, m in template.find_resources("AWS::StepFunctions::StateMachine").items()
            if "StateMachineName" in m["Properties"]
        }
        assert len(machines) == 3
        for machine in machines.values():
            key = machine["Properties"]["DefinitionS3Location"]["Key"]
            definition = json.loads((outdir / f"asset.{key}").read_text())
            timeout = definition.get("TimeoutSeconds")
            # Step Functions' own limit is a year; each of ours is meant to end within days.
            assert isinstance(timeout, int) and 0 < timeout <= 7 * 24 * 3600, machine["Properties"]["StateMachineName"]


def test_sagemaker_resources_wait_for_the_policy_of_the_role_they_run_as(templates: dict[str, Template]) -> None:
    """A Model (or what creates one) made before its role's policy exists cannot pull the image or read
    the model: CloudFormation must create the policy first."""
    for template in templates.values():
        resources = template.to_json()["Resources"]
        (role,) = [
            logical
            for logical, r in resources.items()
            if r["Type"] == "AWS::IAM::Role"
            and {"Service": "sagemaker.amazonaws.com"}
            in [s["Principal"] for s in r["Properties"]["AssumeRolePolicyDocument"]["Statement"]]
        ]
        policies = {
            logical
            for logical, r in resources.items()
            if r["Type"] == "AWS::IAM::Policy" and {"Ref": role} in r["Properties"]["Roles"]
        }
        assert policies
        users = [
            logical
            for logical, r in resources.items()
            if r["Type"].startswith("AWS::SageMaker::")
            or (r["Type"].startswith("Custom::") and role in json.dumps(r.get("Properties", {})))
        ]
        assert users
        for logical in users:
            assert policies <= _depends_on(resources, logical), logical


def test_the_stack_says_where_packages_are_registered(templates: dict[str, Template]) -> None:
    for template in templates.values():
        outputs = template.find_outputs("RegistryBucket")
        (output,) = outputs.values()
        bucket = output["Value"]["Ref"]
        assert template.to_json()["Resources"][bucket]["Type"] == "AWS::S3::Bucket"
        assert "Artifacts" in bucket


def test_a_first_deploy_without_models_has_no_endpoint_and_no_approval_rule(tmp_path: Path) -> None:
    """A new account's first deploy (README) has no models yet: an approval there must start nothing
    (before, the rule matched every package group, and the rollout met no endpoint)."""
    environments = json.loads(json.dumps(CONTEXT[CONTEXT_KEY]))
    environments["dev"]["models"] = []
    app = cdk.App(
        context={**CONTEXT, CONTEXT_KEY: environments, "env": "dev", "aws:cdk:bundling-stacks": []},
        outdir=str(tmp_path),
    )
    stack = build(app, nag=False)["dev"]
    template = Template.from_stack(stack)
    template.resource_count_is("Custom::SagegateEndpoint", 0)
    template.resource_count_is("AWS::Events::Rule", 0)
    assert stack.rollouts.on_approval == {}
