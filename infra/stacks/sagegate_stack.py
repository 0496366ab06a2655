"""One environment of sagegate: the constructs wired together, grants and settings between them."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Aspects, CfnOutput, RemovalPolicy, Stack, Validations
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.config import EnvConfig
from infra.constructs.access import list_objects, read_objects
from infra.constructs.api import Api
from infra.constructs.batch_jobs import BatchJobs
from infra.constructs.bundling import lambda_code
from infra.constructs.cache_rotation import CacheRotation
from infra.constructs.data import REDIS_PORT, Data, LogGroupsUseKey
from infra.constructs.firewall import Firewall
from infra.constructs.images import BATCH, INFERENCE, INFERENCE_GPU, MONITOR, Images, grant_pull, image_tag, publish
from infra.constructs.model_monitoring import ModelMonitoring
from infra.constructs.monitoring import Monitoring
from infra.constructs.network import Network
from infra.constructs.registry import READERS, bucket_name, grant_decrypt_packages, reader_role_name
from infra.constructs.rollouts import Rollouts
from infra.constructs.serving import Serving
from infra.nag import acknowledge, arn, policy_holder, wildcard_resource
from sagegate.gateway.config import GatewaySettings
from sagegate.registry.sagemaker import DEFAULT_PREFIX as REGISTRY_PREFIX


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
        retention = logs.RetentionDays(logs.RetentionDays[RETENTION[config.log_retention_days]])
        prefix = config.prefix
        code = lambda_code()  # one asset per stack, shared by its Lambdas
        registry = config.registry_account  # None: this account holds its own registry

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
            artifacts=registry is None,
        )
        if data.artifacts is not None:
            artifacts: s3.IBucket = data.artifacts
        else:  # the registry stack's bucket (infra/constructs/registry.py), by its fixed name
            artifacts = s3.Bucket.from_bucket_name(self, "RegistryArtifacts", bucket_name(str(registry), self.region))
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
            artifacts=artifacts,
            capture=data.capture,
            batch=data.batch,
            thresholds=config.alarms,
            topic=monitoring.topic,
            code=code,
            log_retention=retention,
            removal=removal,
            registry_account=registry,
            role_name=reader_role_name(prefix, "sagemaker") if registry else None,
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
            artifacts=artifacts,
            capture=data.capture,
            reports=data.batch,
            models=config.models,
            rollout=config.rollout_policy,
            log_retention=retention,
            removal=removal,
            registry_account=registry,
        )
        serving.add_endpoints(
            config.models, routes=data.routes, machine=rollouts.machine, first_input=rollouts.workflow_input
        )
        images = self._images(config, data.key, code, retention, removal)
        batch_jobs = BatchJobs(
            self,
            "BatchJobs",
            prefix=prefix,
            key=data.key,
            topic=monitoring.topic,
            sagemaker_role=serving.role,
            batch=data.batch,
            image_uri=images[BATCH.name],
            log_retention=retention,
            removal=removal,
            registry_account=registry,
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
                "SAGEGATE_REGISTRY_BUCKET": artifacts.bucket_name,
                **(
                    {
                        "SAGEGATE_REGISTRY_ACCOUNT": registry,
                        "SAGEGATE_REGISTRY_MODELS": ",".join(m.name for m in config.models),
                    }
                    if registry
                    else {}
                ),
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
        read_objects(api.function, artifacts, f"{REGISTRY_PREFIX}/", why="the registry's manifests")
        list_objects(api.function, data.batch)  # a batch job's progress: its output objects over its input objects
        data.predictions.grant_put_records(api.function)
        batch_jobs.machine.grant_start_execution(api.function)
        batch_jobs.grant_describe(api.function)
        for name in serving.endpoints.values():
            api.function.add_to_role_policy(_invoke(self, name))
        _read_registry(api.function, registry)
        # Image pulls: endpoints, transform jobs (inference image) and spot jobs (batch image).
        grant_pull(serving.role, self.repositories)
        for name, uri in images.items():
            publish(self, config.name, name, uri)
        model_monitoring = ModelMonitoring(
            self,
            "ModelMonitoring",
            prefix=prefix,
            key=data.key,
            topic=monitoring.topic,
            table=data.log_table,
            logs_bucket=data.prediction_logs,
            registry_bucket=artifacts,
            registry_prefix=f"{REGISTRY_PREFIX}/",
            repository=self.images.repositories[MONITOR.name],
            image_tag=image_tag(MONITOR),
            image_build=self.images.builds[MONITOR.name],
            models=[m.name for m in config.models],
            log_retention=retention,
            removal=removal,
            registry_account=registry,
            stream_name=data.predictions.delivery_stream_name,
        )
        if registry is not None:
            self._read_from(
                registry,
                config,
                serving=serving,
                rollouts=rollouts,
                batch_jobs=batch_jobs,
                api=api,
                model_monitoring=model_monitoring,
            )

        if data.artifacts is not None:  # else the registry stack's output
            CfnOutput(
                self,
                "RegistryBucket",
                value=data.artifacts.bucket_name,
                description="where `sagegate register --target aws` uploads packages (SAGEGATE_AWS_BUCKET)",
            )
        monitoring.add_models(config.models, serving.endpoints)
        monitoring.add_batch(batch_jobs.machine)
        self.api, self.rollouts, self.batch_jobs, self.serving, self.data = api, rollouts, batch_jobs, serving, data
        self.model_monitoring = model_monitoring

    def _images(
        self,
        config: EnvConfig,
        key: kms.IKey,
        code: lambda_.Code,
        retention: logs.RetentionDays,
        removal: RemovalPolicy,
    ) -> dict[str, str]:
        """The URIs of the environment's images: built by its own Images, or, where the registry is in
        another account, by the registry stack (the same tag: the source's hash; its repositories)."""
        wanted = [INFERENCE, *([INFERENCE_GPU] if config.on_gpu else []), BATCH]
        registry = config.registry_account
        # The monitor Lambda's image is always the environment's own: Lambda pulls only from its account.
        self.images = Images(
            self,
            "Images",
            prefix=config.prefix,
            images=[*(wanted if registry is None else []), MONITOR],
            key=key,
            code=code,
            log_retention=retention,
            removal=removal,
        )
        if registry is None:
            self.repositories = [self.images.repositories[i.name].repository_arn for i in wanted]
            return {i.name: self.images.uris[i.name] for i in wanted}
        names = {i.name: f"sagegate-registry-{i.name}" for i in wanted}
        self.repositories = [
            self.format_arn(service="ecr", account=registry, resource="repository", resource_name=n)
            for n in names.values()
        ]
        host = f"{registry}.dkr.ecr.{self.region}.{self.url_suffix}"
        return {i.name: f"{host}/{names[i.name]}:{image_tag(i)}" for i in wanted}

    def _read_from(
        self,
        registry: str,
        config: EnvConfig,
        *,
        serving: Serving,
        rollouts: Rollouts,
        batch_jobs: BatchJobs,
        api: Api,
        model_monitoring: ModelMonitoring,
    ) -> None:
        """The readers of a registry in another account get the fixed names its resource policies
        name (infra/constructs/registry.py), decrypt its packages, and take its approval events."""
        readers: dict[str, iam.IRole | None] = {
            "gateway": api.function.role,
            "deploy-logic": rollouts.function.role,
            "deploy": rollouts.machine.role,
            "batch": batch_jobs.machine.role,
            "endpoint-owner": serving.owner.role if serving.owner is not None else None,  # none without models
            "monitor": model_monitoring.function.role,
        }
        assert {*readers, "sagemaker"} == {r.name for r in READERS}, "the registry names these roles"
        for reader, role in readers.items():
            if role is None:
                continue
            cfn = role.node.default_child
            assert isinstance(cfn, iam.CfnRole)
            cfn.role_name = reader_role_name(config.prefix, reader)
        for grantee in (serving.role, api.function, rollouts.function, model_monitoring.function):
            grant_decrypt_packages(grantee, registry)
        events.CfnEventBusPolicy(
            self,
            "RegistryEvents",
            event_bus_name="default",
            statement_id=f"{config.prefix}-registry",
            statement={
                "Sid": f"{config.prefix}-registry",
                "Effect": "Allow",
                "Principal": {"AWS": iam.AccountPrincipal(registry).arn},
                "Action": "events:PutEvents",
                "Resource": self.format_arn(service="events", resource="event-bus", resource_name="default"),
            },
        )

    @property
    def availability_zones(self) -> list[str]:
        """The configured zones: no lookup in the account at synth time (so no credentials needed)."""
        return self._zones


def _invoke(stack: Stack, endpoint: str) -> iam.PolicyStatement:
    return iam.PolicyStatement(
        actions=["sagemaker:InvokeEndpoint"],
        resources=[stack.format_arn(service="sagemaker", resource="endpoint", resource_name=endpoint)],
    )


def _read_registry(function: lambda_.Function, account: str | None) -> None:
    """The gateway lists every model of the registry (this account's, or `account`'s) and reads
    their versions (read only)."""
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
                stack.format_arn(service="sagemaker", resource="model-package", resource_name="*", account=account),
                stack.format_arn(
                    service="sagemaker", resource="model-package-group", resource_name="*", account=account
                ),
            ],
        )
    )
    why = "the registry is read, never written; the gateway serves whatever model it holds"
    acknowledge(policy_holder(function), wildcard_resource("*"), f"sagemaker:List* have no resource-level scope; {why}")
    for resource in ("model-package/*", "model-package-group/*"):
        acknowledge(
            policy_holder(function), wildcard_resource(arn(function, "sagemaker", resource, account=account)), why
        )


RETENTION = {
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
