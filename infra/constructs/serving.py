"""SageMaker serving per configured model: the execution role the containers run as, and each
model's endpoint as a custom resource (sagegate.workflows.deploy.endpoint). For a model configured
with variants it creates the endpoint once from them (a Model per variant from its model package, an
endpoint config with data capture and KMS, the endpoint, Application Auto Scaling per variant, the
per-variant alarms that deployments read, named as sagegate.workflows.deploy.alarm_name names them,
and the route that sends the gateway's traffic there); for one configured only by how it is served,
the first approved version creates it through the deployment workflow. Either way the deployment
workflow owns the live variants after: a later `cdk deploy` never changes what serves traffic, and
deleting the stack (removal "destroy") takes the endpoint down."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_cdk import ArnFormat, CustomResource, Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.config import ModelConfig
from infra.constructs.access import list_objects, read_objects, write_objects
from infra.constructs.providers import handler_pair, waiting_provider
from infra.constructs.scaling import grant_scaling
from infra.constructs.state_machines import pass_to_sagemaker
from infra.nag import acknowledge, arn, policy_holder, wildcard_resource
from sagegate.deploy.policy import AlarmThresholds
from sagegate.registry.sagemaker import DEFAULT_PREFIX as REGISTRY_PREFIX
from sagegate.workflows.deploy.endpoint import EndpointSpec, FirstVariant
from sagegate.workflows.deploy.scaling import Scaling

CAPTURE_PREFIX = "capture"  # data capture under s3://<capture bucket>/capture/<endpoint>/<variant>/...


class Serving(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        prefix: str,
        models: list[ModelConfig],
        key: kms.IKey,
        artifacts: s3.IBucket,
        capture: s3.IBucket,
        batch: s3.IBucket,
        thresholds: AlarmThresholds,
        topic: sns.ITopic,
        code: lambda_.Code,
        log_retention: logs.RetentionDays,
        removal: RemovalPolicy,
        registry_account: str | None = None,
        role_name: str | None = None,
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        self.key = key
        self.registry_account = registry_account  # where the model packages are: None, this account
        self.role = iam.Role(
            self,
            "ExecutionRole",
            role_name=role_name,
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=f"{prefix}: what the inference containers may do",
        )
        # Inference containers read their package; endpoints write captures; batch jobs (transform
        # and managed-spot training run as this role) read their input and write outputs/checkpoints.
        read_objects(self.role, artifacts, f"{REGISTRY_PREFIX}/", why="the model packages")
        write_objects(self.role, capture, f"{CAPTURE_PREFIX}/", why="data capture of the endpoints")
        list_objects(self.role, batch)
        read_objects(self.role, batch, why="batch inputs (batch jobs read and write in the batch bucket)")
        write_objects(self.role, batch, why="batch outputs and spot checkpoints")
        key.grant(self.role, "kms:Encrypt", "kms:DescribeKey")  # capture and job outputs name the key
        # Image pulls: granted by the stack on the environment's own repositories (infra/constructs/images.py).
        log_groups = [f"/aws/sagemaker/{kind}/*" for kind in ("Endpoints", "TransformJobs", "TrainingJobs")]
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[
                    stack.format_arn(
                        service="logs",
                        resource="log-group",
                        resource_name=name,
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                    for name in log_groups
                ],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": ["/aws/sagemaker/Endpoints", "sagegate"]}},
            )
        )
        acknowledge(
            self.role,
            wildcard_resource("*"),
            "ecr:GetAuthorizationToken has no resource-level scope; cloudwatch:PutMetricData has none either"
            " and is limited to the SageMaker and sagegate namespaces by condition",
        )
        for name in log_groups:
            acknowledge(
                self.role,
                wildcard_resource(arn(self, "logs", f"log-group:{name}")),
                "SageMaker names the log streams of endpoints and jobs at run time, under this fixed group",
            )
        self.endpoints: dict[str, str] = {}
        self.owner: lambda_.Function | None = None  # the function that creates the endpoints
        # what add_endpoints gives each endpoint resource
        self.prefix, self.capture, self.topic = prefix, capture, topic
        self.thresholds, self.removal = thresholds, removal
        if models:
            self._owner(prefix, code, log_retention, removal)

    def _owner(
        self, prefix: str, code: lambda_.Code, log_retention: logs.RetentionDays, removal: RemovalPolicy
    ) -> None:
        # set by add_endpoints: the route table (the pinned path writes the first route) and the workflow
        self._completes: lambda_.Function | None = None
        """The custom resource's provider: `sagegate.workflows.deploy.endpoint` creates each endpoint
        once; the deployment workflow owns its variants after (see that module)."""
        stack = Stack.of(self)
        creates, completes = handler_pair(
            self,
            "EndpointOwner",
            module="endpoint_handler",
            code=code,
            timeout=Duration.minutes(2),
            log_retention=log_retention,
            removal=removal,
            environment={"POWERTOOLS_SERVICE_NAME": "sagegate-endpoint"},
        )

        def sagemaker_arn(kind: str) -> str:
            return stack.format_arn(service="sagemaker", resource=kind, resource_name=f"{prefix}-*")

        # on_event creates (or starts deleting) the endpoint; is_complete waits for it, then gives
        # the first variants their scaling and alarms (or deletes the config and models left).
        self.owner = creates
        alarms = stack.format_arn(
            service="cloudwatch",
            resource="alarm",
            resource_name=f"{prefix}-*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        for function, grants in (
            (
                creates,
                [
                    (["sagemaker:CreateModel", "sagemaker:DescribeModel"], sagemaker_arn("model")),
                    (  # CreateEndpoint authorizes on the config it names too
                        [
                            "sagemaker:CreateEndpointConfig",
                            "sagemaker:DescribeEndpointConfig",
                            "sagemaker:CreateEndpoint",
                        ],
                        sagemaker_arn("endpoint-config"),
                    ),
                    (
                        ["sagemaker:CreateEndpoint", "sagemaker:DescribeEndpoint", "sagemaker:DeleteEndpoint"],
                        sagemaker_arn("endpoint"),
                    ),
                    # CreateModel from a model package reads it (a precaution: the Service Authorization
                    # Reference lists no dependent action)
                    (
                        ["sagemaker:DescribeModelPackage"],
                        stack.format_arn(
                            service="sagemaker",
                            resource="model-package",
                            resource_name="*/*",
                            account=self.registry_account,
                        ),
                    ),
                    (["cloudwatch:DeleteAlarms"], alarms),
                    # a model approved before the stack existed: its latest approved version (List
                    # has no required resource: it authorizes on "*")
                    (["sagemaker:ListModelPackages"], "*"),
                ],
            ),
            (
                completes,
                [
                    (["sagemaker:DeleteModel"], sagemaker_arn("model")),
                    (["sagemaker:DeleteEndpointConfig"], sagemaker_arn("endpoint-config")),
                    (["sagemaker:DescribeEndpoint", "sagemaker:DeleteEndpoint"], sagemaker_arn("endpoint")),
                    (["cloudwatch:PutMetricAlarm"], alarms),
                ],
            ),
        ):
            for actions, resource in grants:
                function.add_to_role_policy(iam.PolicyStatement(actions=actions, resources=[resource]))
            # on_event deregisters the live variants' targets (Delete), is_complete registers the first ones
            grant_scaling(function, prefix, register=function is completes, deregister=function is creates)
            holder = policy_holder(function)
            names = [f"model/{prefix}-*", f"endpoint-config/{prefix}-*", f"endpoint/{prefix}-*"]
            for name in [*names, *(["model-package/*/*"] if function is creates else [])]:
                account = self.registry_account if name.startswith("model-package") else None
                acknowledge(
                    holder,
                    wildcard_resource(arn(self, "sagemaker", name, account=account)),
                    "the endpoints, configs and models of this environment, named under its prefix when the"
                    " endpoint is first created (model packages: read only, any configured model's versions)",
                )
            acknowledge(
                holder,
                wildcard_resource(arn(self, "cloudwatch", f"alarm:{prefix}-*")),
                "the alarms of the endpoint's variants, named under this environment's prefix",
            )
            if function is creates:
                acknowledge(
                    holder,
                    wildcard_resource("*"),
                    "sagemaker:ListModelPackages has no required resource type (it authorizes on *); it lists"
                    " a configured model's approved versions, nothing else",
                )
        self._completes = completes
        pass_to_sagemaker(creates.role, self.role)  # type: ignore[arg-type]
        self.key.grant(creates, "kms:CreateGrant", "kms:DescribeKey")  # endpoint configs name the key
        self.provider = waiting_provider(
            self,
            "EndpointOwner",
            prefix=prefix,
            what="the endpoints",
            on_event=creates,
            is_complete=completes,
            # CloudFormation waits an hour at most for a custom resource (ServiceTimeout <= 3600 s)
            total_timeout=Duration.minutes(55),
            log_retention=log_retention,
            removal=removal,
        )

    def add_endpoints(
        self,
        models: list[ModelConfig],
        *,
        routes: dynamodb.ITable,
        machine: sfn.IStateMachine,
        first_input: Callable[[ModelConfig], dict[str, Any]],
    ) -> None:
        """Each model's endpoint resource; `first_input(model)` is the approval rule's input for it
        (the workflow a model without variants starts for a version approved before the stack)."""
        if not models:
            return
        assert self.owner is not None and self._completes is not None
        # the route of an endpoint made from variants: written, or pointed at them when it was made again
        routes.grant(self._completes, "dynamodb:GetItem", "dynamodb:UpdateItem")
        machine.grant_start_execution(self.owner)
        for model in models:
            self._endpoint(model, routes=routes, machine=machine, first_input=first_input(model))

    def _endpoint(
        self, model: ModelConfig, *, routes: dynamodb.ITable, machine: sfn.IStateMachine, first_input: dict[str, Any]
    ) -> None:
        stack = Stack.of(self)
        endpoint_name = f"{self.prefix}-{model.name}"
        spec = EndpointSpec(
            model=model.name,
            endpoint=endpoint_name,
            variants=[FirstVariant.model_validate(v.model_dump()) for v in model.variants],
            autoscaling=Scaling.model_validate(model.autoscaling.model_dump()),
            capture_percent=model.data_capture_percent,
            alarms=self.thresholds,
        )
        group = (
            stack.format_arn(
                service="sagemaker",
                resource="model-package-group",
                resource_name=model.name,
                account=self.registry_account,
            )
            if self.registry_account
            else model.name
        )
        first = {"state_machine": machine.state_machine_arn, "package_group": group, "input": first_input}
        resource = CustomResource(
            self,
            f"Endpoint{model.name}",
            service_token=self.provider.service_token,
            resource_type="Custom::SagegateEndpoint",
            properties={
                "Spec": spec.model_dump_json(),
                "ExecutionRoleArn": self.role.role_arn,
                "KmsKeyArn": self.key.key_arn,
                "CaptureUri": self.capture.s3_url_for_object(CAPTURE_PREFIX),
                "TopicArn": self.topic.topic_arn,
                "RouteTable": routes.table_name,
                **({} if model.pinned else {"FirstRollout": stack.to_json_string(first)}),
            },
            removal_policy=self.removal,
        )
        # the role and its policy exist before anything runs as it (pull the image, read the model)
        resource.node.add_dependency(self.role)
        self.endpoints[model.name] = endpoint_name
