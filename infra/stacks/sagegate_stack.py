"""One environment of sagegate: the constructs wired together, grants and settings between them."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Aspects, CfnOutput, RemovalPolicy, Stack, Validations
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from infra.config import EnvConfig
from infra.constructs.access import list_objects, read_objects
from infra.constructs.api import Api
from infra.constructs.batch_jobs import BatchJobs
from infra.constructs.bundling import lambda_code
from infra.constructs.cache_rotation import CacheRotation
from infra.constructs.data import REDIS_PORT, Data, LogGroupsUseKey
from infra.constructs.firewall import Firewall
from infra.constructs.images import BATCH, INFERENCE, INFERENCE_GPU, Images
from infra.constructs.monitoring import Monitoring
from infra.constructs.network import Network
from infra.constructs.rollouts import Rollouts
from infra.constructs.serving import Serving
from infra.nag import acknowledge, arn, policy_holder, wildcard_resource
from sagegate.gateway.config import GatewaySettings
from sagegate.registry.sagemaker import DEFAULT_PREFIX as REGISTRY_PREFIX
from sagegate.targets import image_parameter


class SagegateStack(Stack):
    def __init__(self, scope: Construct, id: str, *, config: EnvConfig, **kwargs: object) -> None:
        self._zones = config.zones
        super().__init__(scope, id, **kwargs)  # type: ignore[arg-type]
        Validations.of(self).acknowledge(
            Acknowledgment(
                id="CloudFormation-Validate::W3010",
                reason="the zones are pinned per environment in cdk.json on purpose: a redeploy never moves a subnet",
            )
        )
        removal = RemovalPolicy.DESTROY if config.removal == "destroy" else RemovalPolicy.RETAIN
        retention = logs.RetentionDays(logs.RetentionDays[_RETENTION[config.log_retention_days]])
        prefix = config.prefix
        code = lambda_code()  # one asset per stack, shared by its Lambdas

        network = Network(
            self, "Network", cidr=config.vpc_cidr, zones=config.zones, log_retention=retention, removal=removal
        )
        data = Data(
            self,
            "Data",
            prefix=prefix,
            vpc=network.vpc,
            cache_node_type=config.cache_node_type,
            cache_replicas=config.cache_replicas,
            removal=removal,
            log_retention=retention,
        )
        Aspects.of(self).add(LogGroupsUseKey(data.key))
        CacheRotation(
            self,
            "CacheRotation",
            prefix=prefix,
            vpc=network.vpc,
            code=code,
            secret=data.cache_secret,
            cache=data.cache,
            cache_security_group=data.cache_security_group,
            port=REDIS_PORT,
            days=config.cache_token_rotation_days,
            log_retention=retention,
            removal=removal,
        )
        monitoring = Monitoring(self, "Monitoring", prefix=prefix, key=data.key, email=config.alarm_email)
        serving = Serving(
            self,
            "Serving",
            prefix=prefix,
            models=config.models,
            key=data.key,
            artifacts=data.artifacts,
            capture=data.capture,
            batch=data.batch,
            thresholds=config.alarms,
            topic=monitoring.topic,
            code=code,
            log_retention=retention,
            removal=removal,
        )
        rollouts = Rollouts(
            self,
            "Rollouts",
            prefix=prefix,
            code=code,
            key=data.key,
            routes=data.routes,
            topic=monitoring.topic,
            sagemaker_role=serving.role,
            artifacts=data.artifacts,
            capture=data.capture,
            reports=data.batch,
            models=[m.name for m in config.models],
            rollout=config.rollout_policy,
            log_retention=retention,
            removal=removal,
        )
        images = Images(
            self,
            "Images",
            prefix=prefix,
            images=[INFERENCE, *([INFERENCE_GPU] if config.on_gpu else []), BATCH],
            key=data.key,
            code=code,
            log_retention=retention,
            removal=removal,
        )
        batch_jobs = BatchJobs(
            self,
            "BatchJobs",
            prefix=prefix,
            key=data.key,
            topic=monitoring.topic,
            sagemaker_role=serving.role,
            batch=data.batch,
            image_uri=images.uris[BATCH.name],
            log_retention=retention,
            removal=removal,
        )
        api = Api(
            self,
            "Api",
            prefix=prefix,
            vpc=network.vpc,
            code=code,
            auth=config.api_auth,
            throttle_rate=config.throttle_rate,
            throttle_burst=config.throttle_burst,
            provisioned_concurrency=config.provisioned_concurrency,
            memory_mb=config.lambda_memory_mb,
            tracing=config.tracing,
            log_retention=retention,
            removal=removal,
            environment={
                "SAGEGATE_ROUTE_TABLE": data.routes.table_name,
                "SAGEGATE_REGISTRY_BUCKET": data.artifacts.bucket_name,
                **GatewaySettings.environment(
                    redis_url=f"rediss://{data.cache.attr_primary_end_point_address}:{REDIS_PORT}/0",
                    redis_auth_secret_arn=data.cache_secret.secret_arn,
                    prediction_log_stream=data.predictions.delivery_stream_name,
                    batch_state_machine_arn=batch_jobs.machine.state_machine_arn,
                    batch_bucket=data.batch.bucket_name,
                    resource_prefix=prefix,
                ),
            },
        )
        if config.waf:
            Firewall(self, "Firewall", prefix=prefix, stage=api.api.deployment_stage, rate_limit=config.waf_rate_limit)
        else:
            acknowledge(
                api.api.deployment_stage,
                "APIG3",
                f"waf: false in {config.name}'s settings (its fixed monthly cost); auth, per-key and stage"
                " throttling still apply",
            )
        # Grants between the parts.
        data.cache_security_group.add_ingress_rule(
            ec2.Peer.security_group_id(api.security_group.security_group_id),
            ec2.Port.tcp(REDIS_PORT),
            "the gateway Lambda",
        )
        data.cache_secret.grant_read(api.function)
        data.routes.grant_read_data(api.function)
        read_objects(api.function, data.artifacts, f"{REGISTRY_PREFIX}/", why="the registry's manifests")
        list_objects(api.function, data.batch)  # a batch job's progress: its output objects over its input objects
        data.predictions.grant_put_records(api.function)
        batch_jobs.machine.grant_start_execution(api.function)
        batch_jobs.grant_describe(api.function)
        for name in serving.endpoints.values():
            api.function.add_to_role_policy(_invoke(self, name))
        _read_registry(api.function)
        images.grant_pull(serving.role)  # endpoints, transform jobs (inference image) and spot jobs (batch image)
        for name, uri in images.uris.items():
            _publish(self, config.name, name, uri)

        CfnOutput(
            self,
            "RegistryBucket",
            value=data.artifacts.bucket_name,
            description="where `sagegate register --target aws` uploads packages (SAGEGATE_AWS_BUCKET)",
        )
        monitoring.add_models(config.models, serving.endpoints)
        monitoring.add_batch(batch_jobs.machine)
        self.api, self.rollouts, self.batch_jobs, self.serving, self.data = api, rollouts, batch_jobs, serving, data
        self.images = images

    @property
    def availability_zones(self) -> list[str]:
        """The configured zones: no lookup in the account at synth time (so no credentials needed)."""
        return self._zones


def _invoke(stack: Stack, endpoint: str) -> iam.PolicyStatement:
    return iam.PolicyStatement(
        actions=["sagemaker:InvokeEndpoint"],
        resources=[stack.format_arn(service="sagemaker", resource="endpoint", resource_name=endpoint)],
    )


def _publish(stack: Stack, environment: str, image: str, uri: str) -> None:
    """An image's URI as an output, and in SSM where `sagegate register --target aws` reads it."""
    cid = "".join(part.title() for part in image.split("-"))
    ssm.StringParameter(
        stack,
        f"{cid}ImageParameter",
        parameter_name=image_parameter(environment, image),
        string_value=uri,
        description=f"the {image} image built from this environment's source (tag: its hash)",
    )
    CfnOutput(stack, f"{cid}ImageUri", value=uri, description=f"the {image} image")


def _read_registry(function: lambda_.Function) -> None:
    """The gateway lists every model of the account's registry and reads their versions (read only)."""
    stack = Stack.of(function)
    function.add_to_role_policy(
        iam.PolicyStatement(
            actions=["sagemaker:ListModelPackageGroups", "sagemaker:ListModelPackages"], resources=["*"]
        )
    )
    function.add_to_role_policy(
        iam.PolicyStatement(
            actions=["sagemaker:DescribeModelPackage", "sagemaker:DescribeModelPackageGroup"],
            resources=[
                stack.format_arn(service="sagemaker", resource="model-package", resource_name="*"),
                stack.format_arn(service="sagemaker", resource="model-package-group", resource_name="*"),
            ],
        )
    )
    why = "the registry is read, never written; the gateway serves whatever model it holds"
    acknowledge(policy_holder(function), wildcard_resource("*"), f"sagemaker:List* have no resource-level scope; {why}")
    for resource in ("model-package/*", "model-package-group/*"):
        acknowledge(policy_holder(function), wildcard_resource(arn(function, "sagemaker", resource)), why)


_RETENTION = {
    7: "ONE_WEEK",
    14: "TWO_WEEKS",
    30: "ONE_MONTH",
    60: "TWO_MONTHS",
    90: "THREE_MONTHS",
    180: "SIX_MONTHS",
    365: "ONE_YEAR",
    731: "TWO_YEARS",
    1827: "FIVE_YEARS",
    3653: "TEN_YEARS",
}
