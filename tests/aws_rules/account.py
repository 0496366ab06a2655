"""A moto account built from a synthesized stack, and the AWS calls each caller makes in it.

`build_account` creates in moto what CloudFormation would create for the resources the workflows
touch (the KMS key, buckets, route table, topic, roles, the SageMaker models, endpoint configs and
endpoints, their scalable targets, scaling policies and alarms, the state machines with their
synthesized definitions), with the physical names of `Deployed`. `Recorder` hands each caller (a
role of the template) its own boto3 session and records every call with its parameters, so a test
can check afterwards that the caller's role allows each one (`assert_allowed`) and that botocore's
model accepts each request (`assert_valid`).

What this cannot prove: how AWS evaluates policies beyond the rules in tests/aws_rules/iam.py
(SCPs, permission boundaries, session policies), and the timing of anything.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config

from tests.aws_rules.iam import Call, evaluate, requests_for
from tests.aws_rules.params import problems as parameter_problems
from tests.aws_rules.template import Deployed

__all__ = ["Recorder", "build_account"]

_TRUST = json.dumps({"Version": "2012-10-17", "Statement": []})


@dataclass
class Recorder:
    """Every AWS call, by the caller (a role's logical id) that made it."""

    deployed: Deployed
    calls: list[Call] = field(default_factory=list)
    _local: threading.local = field(default_factory=threading.local)
    on_call: list[Callable[[str, dict[str, Any]], None]] = field(default_factory=list)
    _sessions: dict[str, boto3.Session] = field(default_factory=dict)

    def session(self, caller: str) -> boto3.Session:
        """The caller's session (one per caller): every call of its clients is recorded."""
        if caller in self._sessions:
            return self._sessions[caller]
        session = boto3.Session(region_name=self.deployed.region)

        def record(params: dict[str, Any], model: Any, **_: Any) -> None:
            if self.paused:
                return
            service = model.service_model.service_name
            facts = _facts(self.deployed, service, model.name, params)
            self.calls.append(Call(caller, service, model.name, json.loads(json.dumps(params, default=str)), facts))
            for hook in self.on_call:
                hook(model.name, params)

        session.events.register("before-parameter-build", record)
        self._sessions[caller] = session
        return session

    def record(self, caller: str, service: str, operation: str, params: dict[str, Any]) -> None:
        """A call made without a botocore client (a stand-in's)."""
        if not self.paused:
            self.calls.append(Call(caller, service, operation, json.loads(json.dumps(params, default=str))))

    def client(self, caller: str, service: str, **kwargs: Any) -> Any:
        return self.session(caller).client(service, **kwargs)

    @property
    def paused(self) -> bool:
        return bool(getattr(self._local, "paused", False))

    @contextmanager
    def off(self) -> Iterator[None]:
        """Calls this thread makes meanwhile (a test setting up, or looking at a result) are not the
        callers': a state machine running on its own thread is still recorded."""
        before, self._local.paused = self.paused, True
        try:
            yield
        finally:
            self._local.paused = before

    # -- the checks ----------------------------------------------------------------------------------

    def denied(self) -> list[str]:
        """Each IAM request of a recorded call that its caller's role does not allow."""
        found = []
        statements = {caller: self.deployed.role_statements(caller) for caller in {c.caller for c in self.calls}}
        buckets = _resource_policies(self.deployed)
        for call in self.calls:
            for request in requests_for(call, account=self.deployed.account, region=self.deployed.region):
                verdict = evaluate(request, statements[call.caller], buckets)
                if verdict != "allowed":
                    found.append(f"{call.caller}: {call} needs {request}: {verdict}")
        return sorted(set(found))

    def invalid(self) -> list[str]:
        """Each recorded request that botocore's model of the operation refuses."""
        return sorted({f"{c.caller}: {c}: {p}" for c in self.calls for p in parameter_problems(c)})

    def assert_allowed(self) -> None:
        denied = self.denied()
        assert not denied, "calls the roles do not allow:\n" + "\n".join(denied)

    def assert_valid(self) -> None:
        invalid = self.invalid()
        assert not invalid, "requests AWS would refuse:\n" + "\n".join(invalid)


def _facts(deployed: Deployed, service: str, operation: str, params: dict[str, Any]) -> dict[str, Any]:
    """What IAM looks at beyond the request itself, read from moto's account at call time."""
    from moto.sagemaker.models import sagemaker_backends

    backend = sagemaker_backends[deployed.account][deployed.region]
    facts: dict[str, Any] = {}
    if service == "application-autoscaling" and operation == "RegisterScalableTarget":
        endpoint = str(params.get("ResourceId", "")).split("/")[1:2]
        if endpoint and endpoint[0] in backend.endpoints:
            facts["endpoint_config"] = backend.endpoints[endpoint[0]].endpoint_config_name
    if service == "athena" and "QueryExecutionId" in params:  # authorized on the execution's workgroup
        from moto.athena.models import athena_backends

        execution = athena_backends[deployed.account][deployed.region].executions.get(params["QueryExecutionId"])
        if execution is not None and execution.workgroup is not None:
            facts["implied"] = {"WorkGroup": execution.workgroup.name}
    if service == "sagemaker" and operation in ("CreateEndpoint", "UpdateEndpoint"):
        config = backend.endpoint_configs.get(params.get("EndpointConfigName", ""))
        if config is not None and config.kms_key_id:
            facts["endpoint_config_key"] = config.kms_key_id
    return facts


def _resource_policies(deployed: Deployed) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    for logical in deployed.of_type("AWS::S3::BucketPolicy"):
        statements.extend(deployed.properties(logical)["PolicyDocument"]["Statement"])
    return statements


def build_account(deployed: Deployed, recorder: Recorder | None = None) -> dict[str, Any]:
    """Creates the stack's resources in moto (inside an active mock_aws); answers their clients.
    The endpoints are custom resources: with a recorder, their handlers create them as
    CloudFormation would have them do (`custom_resource`), and their calls are recorded."""
    session = boto3.Session(region_name=deployed.region)
    kms, s3, ddb = session.client("kms"), session.client("s3"), session.client("dynamodb")
    for logical in deployed.of_type("AWS::KMS::Key"):
        key = kms.create_key(Description=logical)["KeyMetadata"]["KeyId"]
        deployed.physical[logical] = key
    for logical in deployed.of_type("AWS::S3::Bucket"):
        s3.create_bucket(
            Bucket=deployed.name(logical), CreateBucketConfiguration={"LocationConstraint": deployed.region}
        )
    for logical in [*deployed.of_type("AWS::DynamoDB::GlobalTable"), *deployed.of_type("AWS::DynamoDB::Table")]:
        props = deployed.properties(logical)
        ddb.create_table(
            TableName=deployed.name(logical),
            KeySchema=props["KeySchema"],
            AttributeDefinitions=props["AttributeDefinitions"],
            BillingMode="PAY_PER_REQUEST",
        )
    sns = session.client("sns")
    for logical in deployed.of_type("AWS::SNS::Topic"):
        sns.create_topic(Name=deployed.name(logical))
    iam = session.client("iam")
    for logical in deployed.of_type("AWS::IAM::Role"):
        iam.create_role(RoleName=deployed.name(logical), AssumeRolePolicyDocument=_TRUST)
    _serving(deployed, session, recorder)
    _log_table(deployed, session)
    sfn = session.client("stepfunctions")
    machines = {}
    for logical in deployed.of_type("AWS::StepFunctions::StateMachine"):
        props = deployed.properties(logical)
        machines[logical] = sfn.create_state_machine(
            name=deployed.name(logical), definition=deployed.definition(logical), roleArn=props["RoleArn"]
        )["stateMachineArn"]
    return {"session": session, "machines": machines}


def _log_table(deployed: Deployed, session: boto3.Session) -> None:
    """The prediction log's Glue database and table, and the Athena workgroup that queries it."""
    glue, athena = session.client("glue"), session.client("athena")
    for logical in deployed.of_type("AWS::Glue::Database"):
        glue.create_database(DatabaseInput=deployed.resolve(deployed.properties(logical)["DatabaseInput"]))
    for logical in deployed.of_type("AWS::Glue::Table"):
        props = deployed.resolve(deployed.properties(logical))
        glue.create_table(DatabaseName=props["DatabaseName"], TableInput=props["TableInput"])
    for logical in deployed.of_type("AWS::Athena::WorkGroup"):
        props = deployed.resolve(deployed.properties(logical))
        # CloudFormation's WorkGroupConfiguration has the API's property names
        athena.create_work_group(Name=props["Name"], Configuration=props["WorkGroupConfiguration"])


def _serving(deployed: Deployed, session: boto3.Session, recorder: Recorder | None) -> None:
    sm = session.client("sagemaker", config=Config(parameter_validation=False))
    for logical in deployed.of_type("AWS::SageMaker::Model"):
        props = deployed.properties(logical)
        sm.create_model(
            ModelName=deployed.name(logical),
            ExecutionRoleArn=props["ExecutionRoleArn"],
            PrimaryContainer=props["PrimaryContainer"],
            EnableNetworkIsolation=props.get("EnableNetworkIsolation", False),
        )
    for logical in deployed.of_type("AWS::SageMaker::EndpointConfig"):
        props = deployed.properties(logical)
        sm.create_endpoint_config(
            EndpointConfigName=deployed.name(logical),
            ProductionVariants=props["ProductionVariants"],
            DataCaptureConfig=props.get("DataCaptureConfig", {}),
            KmsKeyId=props.get("KmsKeyId", ""),
        )
    for logical in deployed.of_type("AWS::SageMaker::Endpoint"):
        props = deployed.properties(logical)
        sm.create_endpoint(EndpointName=deployed.name(logical), EndpointConfigName=props["EndpointConfigName"])
    if recorder is not None:
        for logical in deployed.of_type(ENDPOINT_RESOURCE):
            custom_resource(deployed, recorder, logical, "Create")
    autoscaling = session.client("application-autoscaling")
    targets = deployed.of_type("AWS::ApplicationAutoScaling::ScalableTarget")
    for logical in targets:
        props = deployed.properties(logical)
        autoscaling.register_scalable_target(
            **{k: props[k] for k in ("ServiceNamespace", "ResourceId", "ScalableDimension")},
            MinCapacity=props["MinCapacity"],
            MaxCapacity=props["MaxCapacity"],
        )
    for logical, resource in deployed.of_type("AWS::ApplicationAutoScaling::ScalingPolicy").items():
        target = deployed.properties(resource["Properties"]["ScalingTargetId"]["Ref"])
        props = deployed.properties(logical)
        autoscaling.put_scaling_policy(
            PolicyName=props["PolicyName"],
            PolicyType=props["PolicyType"],
            **{k: target[k] for k in ("ServiceNamespace", "ResourceId", "ScalableDimension")},
            TargetTrackingScalingPolicyConfiguration=props["TargetTrackingScalingPolicyConfiguration"],
        )
    cloudwatch = session.client("cloudwatch")
    for logical in deployed.of_type("AWS::CloudWatch::Alarm"):
        props = {k: v for k, v in deployed.properties(logical).items() if k != "Tags"}
        cloudwatch.put_metric_alarm(**props)


ENDPOINT_RESOURCE = "Custom::SagegateEndpoint"


def custom_resource(
    deployed: Deployed,
    recorder: Recorder,
    logical: str,
    request: str,
    *,
    properties: dict[str, Any] | None = None,
    old_properties: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One CloudFormation request to an endpoint custom resource, as the CDK provider framework
    makes it: `on_event`, then `is_complete` until it answers done, each handler as its own role
    (the functions' roles of the template). Answers the last response, with the Data of both.

    What this cannot prove: the framework's own relaying (its Lambdas, waiter state machine and the
    response to CloudFormation), and SageMaker's timing (moto's endpoints are InService at once)."""
    from types import SimpleNamespace

    from sagegate.workflows.deploy import endpoint

    props = properties if properties is not None else deployed.properties(logical)
    name = json.loads(props["Spec"])["endpoint"]
    event: dict[str, Any] = {
        "RequestType": request,
        "LogicalResourceId": logical,
        "ResourceType": ENDPOINT_RESOURCE,
        "ResourceProperties": props,
    }
    if request != "Create":
        event["PhysicalResourceId"] = name
    if old_properties is not None:
        event["OldResourceProperties"] = old_properties

    def clients(handler: str) -> SimpleNamespace:
        role = deployed.role_of("AWS::Lambda::Function", Handler=f"endpoint_handler.{handler}")
        return SimpleNamespace(
            sagemaker=recorder.client(role, "sagemaker"),
            autoscaling=recorder.client(role, "application-autoscaling"),
            cloudwatch=recorder.client(role, "cloudwatch"),
            sfn=recorder.client(role, "stepfunctions"),
            dynamodb=recorder.client(role, "dynamodb"),
        )

    answer = endpoint.on_event(event, clients=clients("on_event"))
    event = {**event, **answer}
    for _ in range(100):
        done = endpoint.is_complete(event, clients=clients("is_complete"))
        if done["IsComplete"]:
            return {**answer, "Data": {**answer.get("Data", {}), **done.get("Data", {})}}
    raise AssertionError(f"{request} of {logical} never completed")
