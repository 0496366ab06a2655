"""Constructs one at a time, each in a bare Stack, with the inputs that change what they build."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Capture, Match, Template

from infra.constructs.access import list_objects, read_objects, write_objects
from infra.constructs.firewall import Firewall
from infra.constructs.functions import VPC_ACCESS_ACTIONS, python_function
from infra.constructs.network import INTERFACE_ENDPOINTS, Network

ZONES = ["eu-west-1a", "eu-west-1b"]


class _Stack(cdk.Stack):
    def __init__(self) -> None:
        super().__init__(cdk.App(), "Bare", env=cdk.Environment(account="111111111111", region="eu-west-1"))

    @property
    def availability_zones(self) -> list[str]:
        return ZONES


@pytest.fixture
def stack() -> cdk.Stack:
    return _Stack()


def _network(stack: cdk.Stack) -> Network:
    return Network(
        stack,
        "Network",
        cidr="10.40.0.0/16",
        zones=ZONES,
        log_retention=logs.RetentionDays.ONE_WEEK,
        removal=cdk.RemovalPolicy.DESTROY,
    )


def test_network_has_no_nat_and_reaches_aws_through_endpoints(stack: cdk.Stack) -> None:
    _network(stack)
    template = Template.from_stack(stack)
    template.resource_count_is("AWS::EC2::NatGateway", 0)
    template.resource_count_is("AWS::EC2::InternetGateway", 0)
    template.resource_count_is("AWS::EC2::Subnet", len(ZONES))
    template.resource_count_is("AWS::EC2::VPCEndpoint", len(INTERFACE_ENDPOINTS) + 2)  # + S3, DynamoDB gateways
    template.has_resource_properties(
        "AWS::EC2::VPCEndpoint", {"VpcEndpointType": "Interface", "PrivateDnsEnabled": True}
    )
    ingress = Capture()
    template.has_resource_properties(
        "AWS::EC2::SecurityGroup",
        {"GroupDescription": Match.string_like_regexp("interface endpoints"), "SecurityGroupIngress": ingress},
    )
    # A literal CIDR (not the VPC's token) lets the rule be checked; only HTTPS comes in.
    assert [(r["CidrIp"], r["FromPort"], r["ToPort"]) for r in ingress.as_array()] == [("10.40.0.0/16", 443, 443)]


def test_a_lambda_gets_its_own_log_group_and_no_managed_policy(stack: cdk.Stack) -> None:
    network = _network(stack)
    python_function(
        stack,
        "Fn",
        handler="x.handler",
        code=lambda_.Code.from_inline("def handler(event, context): pass"),
        log_retention=logs.RetentionDays.ONE_MONTH,  # the network's flow logs keep a week
        removal=cdk.RemovalPolicy.DESTROY,
        vpc=network.vpc,
    )
    template = Template.from_stack(stack)
    role = template.find_resources("AWS::IAM::Role", {"Properties": {"Description": Match.string_like_regexp("Fn")}})
    assert len(role) == 1 and "ManagedPolicyArns" not in next(iter(role.values()))["Properties"]
    statements = [
        s
        for policy in template.find_resources("AWS::IAM::Policy").values()
        if policy["Properties"]["Roles"] == [{"Ref": next(iter(role))}]
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    by_action = {tuple(sorted(s["Action"])): s for s in statements}
    log_group = next(iter(template.find_resources("AWS::Logs::LogGroup", {"Properties": {"RetentionInDays": 30}})))
    assert by_action[("logs:CreateLogStream", "logs:PutLogEvents")]["Resource"] == {"Fn::GetAtt": [log_group, "Arn"]}
    eni = by_action[tuple(sorted(VPC_ACCESS_ACTIONS))]
    assert eni["Resource"] == "*"
    template.has_resource_properties("AWS::Lambda::Function", {"Runtime": "python3.12", "VpcConfig": Match.any_value()})


def test_s3_access_is_one_prefix_with_named_actions_and_the_buckets_key(stack: cdk.Stack) -> None:
    key = kms.Key(stack, "Key")
    bucket = s3.Bucket(stack, "Bucket", encryption=s3.BucketEncryption.KMS, encryption_key=key)
    role = iam.Role(stack, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    read_objects(role, bucket, "models/", why="the model packages")
    write_objects(role, bucket, "reports/", why="reports")
    list_objects(role, bucket, "reports/")
    statements = Capture()
    Template.from_stack(stack).has_resource_properties(
        "AWS::IAM::Policy", {"PolicyDocument": {"Statement": statements}}
    )
    found = {
        (a, str(s.get("Resource")), str(s.get("Condition", "")))
        for s in statements.as_array()
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    actions = {a for a, _, _ in found}
    assert actions == {
        "s3:GetObject",
        "s3:PutObject",
        "s3:AbortMultipartUpload",
        "s3:ListBucket",
        "kms:Decrypt",
        "kms:GenerateDataKey",
    }
    assert any(a == "s3:GetObject" and "/models/*" in r for a, r, _ in found)
    assert any(a == "s3:PutObject" and "/reports/*" in r for a, r, _ in found)
    assert any(a == "s3:ListBucket" and "reports/*" in c for a, _, c in found)


@pytest.mark.parametrize("rate_limit", [None, 5000])
def test_the_firewall_counts_big_bodies_and_limits_per_ip_only_when_asked(
    stack: cdk.Stack, rate_limit: int | None
) -> None:
    api = apigw.RestApi(stack, "Api")
    api.root.add_method("GET")
    Firewall(stack, "Firewall", prefix="t", stage=api.deployment_stage, rate_limit=rate_limit)
    template = Template.from_stack(stack)
    rules = Capture()
    template.has_resource_properties(
        "AWS::WAFv2::WebACL", {"Scope": "REGIONAL", "DefaultAction": {"Allow": {}}, "Rules": rules}
    )
    by_name = {r["Name"]: r for r in rules.as_array()}
    common = by_name["AWSManagedRulesCommonRuleSet"]["Statement"]["ManagedRuleGroupStatement"]
    assert common["RuleActionOverrides"] == [{"Name": "SizeRestrictions_BODY", "ActionToUse": {"Count": {}}}]
    assert ("RatePerIp" in by_name) == (rate_limit is not None)
    assert sorted(r["Priority"] for r in rules.as_array()) == list(range(len(by_name)))
    template.resource_count_is("AWS::WAFv2::WebACLAssociation", 1)


def test_the_zones_of_a_bare_stack_are_what_the_vpc_uses(stack: cdk.Stack) -> None:
    network = _network(stack)
    assert [s.availability_zone for s in network.vpc.isolated_subnets] == ZONES
    assert isinstance(network.endpoint_security_group, ec2.SecurityGroup)
