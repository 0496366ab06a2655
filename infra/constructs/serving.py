"""SageMaker endpoints per configured model: a Model per variant (from its model package), an
endpoint config with data capture and KMS, the endpoint, Application Auto Scaling per variant
(invocations per instance, plus GPU utilization on GPU instances) and the per-variant alarms that
deployments read (named as sagegate.workflows.deploy.alarm_name names them)."""

from __future__ import annotations

import json

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_applicationautoscaling as autoscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from infra.config import ModelConfig
from infra.constructs.access import list_objects, read_objects, write_objects
from infra.nag import acknowledge, arn, wildcard_resource
from sagegate.deploy.policy import AlarmThresholds
from sagegate.registry.sagemaker import DEFAULT_PREFIX as REGISTRY_PREFIX
from sagegate.workflows.deploy import alarm_name
from sagegate.workflows.names import sagemaker_name, short_hash

CAPTURE_PREFIX = "capture"  # data capture under s3://<capture bucket>/capture/<endpoint>/<variant>/...


def variant_metric(endpoint: str, variant: str, name: str, statistic: str) -> cloudwatch.Metric:
    return cloudwatch.Metric(
        namespace="AWS/SageMaker" if name != "GPUUtilization" else "/aws/sagemaker/Endpoints",
        metric_name=name,
        dimensions_map={"EndpointName": endpoint, "VariantName": variant},
        statistic=statistic,
        period=Duration.minutes(1),
    )


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
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        self.role = iam.Role(
            self,
            "ExecutionRole",
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
        self.alarms: list[cloudwatch.Alarm] = []
        for model in models:
            self._endpoint(prefix, model, key, capture, thresholds)

    def _endpoint(
        self, prefix: str, model: ModelConfig, key: kms.IKey, capture: s3.IBucket, thresholds: AlarmThresholds
    ) -> None:
        endpoint_name = f"{prefix}-{model.name}"
        scope = Construct(self, model.name)
        variants = []
        models: list[sagemaker.CfnModel] = []
        for v in model.variants:
            # Named under the environment's prefix (the rollout workflow's roles are scoped to it), with
            # a hash of what the model is: a change makes a new name, as CloudFormation's replacement of
            # a named resource needs.
            model_name = sagemaker_name(endpoint_name, v.name, suffix=short_hash(f"{v.model_package_arn}|isolated"))
            cfn_model = sagemaker.CfnModel(
                scope,
                f"Model{v.name}",
                model_name=model_name,
                execution_role_arn=self.role.role_arn,
                enable_network_isolation=True,
                primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
                    model_package_name=v.model_package_arn
                ),
            )
            variants.append(
                sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                    variant_name=v.name,
                    model_name=model_name,
                    instance_type=v.instance_type,
                    initial_instance_count=v.instance_count,
                    initial_variant_weight=v.weight,
                )
            )
            cfn_model.node.add_dependency(self.role)  # its policy too: the role can pull and read before use
            models.append(cfn_model)
        shape = json.dumps(model.model_dump(mode="json", exclude={"autoscaling"}), sort_keys=True)
        config = sagemaker.CfnEndpointConfig(
            scope,
            "Config",
            endpoint_config_name=sagemaker_name(endpoint_name, suffix=short_hash(shape)),
            production_variants=variants,
            kms_key_id=key.key_arn,
            data_capture_config=sagemaker.CfnEndpointConfig.DataCaptureConfigProperty(
                enable_capture=model.data_capture_percent > 0,
                initial_sampling_percentage=model.data_capture_percent,
                destination_s3_uri=capture.s3_url_for_object(CAPTURE_PREFIX),
                kms_key_id=key.key_arn,
                capture_options=[
                    sagemaker.CfnEndpointConfig.CaptureOptionProperty(capture_mode="Input"),
                    sagemaker.CfnEndpointConfig.CaptureOptionProperty(capture_mode="Output"),
                ],
            ),
        )
        endpoint = sagemaker.CfnEndpoint(
            scope,
            "Endpoint",
            endpoint_name=endpoint_name,
            endpoint_config_name=config.attr_endpoint_config_name,
        )
        for cfn_model in models:
            config.node.add_dependency(cfn_model)
        self.endpoints[model.name] = endpoint_name
        for v in model.variants:
            target = autoscaling.ScalableTarget(
                scope,
                f"Scaling{v.name}",
                service_namespace=autoscaling.ServiceNamespace.SAGEMAKER,
                resource_id=f"endpoint/{endpoint_name}/variant/{v.name}",
                scalable_dimension="sagemaker:variant:DesiredInstanceCount",
                min_capacity=model.autoscaling.min_instances,
                max_capacity=model.autoscaling.max_instances,
            )
            target.node.add_dependency(endpoint)
            target.scale_to_track_metric(
                "Invocations",
                target_value=model.autoscaling.invocations_per_instance,
                predefined_metric=autoscaling.PredefinedMetric.SAGEMAKER_VARIANT_INVOCATIONS_PER_INSTANCE,
                scale_in_cooldown=Duration.minutes(5),
                scale_out_cooldown=Duration.minutes(1),
            )
            if v.gpus:  # GPUUtilization is summed over the instance's GPUs: 100 x GPU count at saturation
                target.scale_to_track_metric(
                    "GpuUtilization",
                    target_value=model.autoscaling.gpu_utilization_percent * v.gpus,
                    custom_metric=variant_metric(endpoint_name, v.name, "GPUUtilization", "Average"),
                    scale_in_cooldown=Duration.minutes(5),
                    scale_out_cooldown=Duration.minutes(1),
                )
            self._alarms(scope, endpoint_name, v.name, thresholds)

    def _alarms(self, scope: Construct, endpoint: str, variant: str, thresholds: AlarmThresholds) -> None:
        errors = variant_metric(endpoint, variant, "Invocation5XXErrors", "Sum")
        invocations = variant_metric(endpoint, variant, "Invocations", "Sum")
        rate = cloudwatch.MathExpression(
            expression=f"IF(invocations >= {thresholds.min_requests}, errors / invocations, 0)",
            using_metrics={"errors": errors, "invocations": invocations},
            label="5XX rate",
            period=Duration.minutes(1),
        )
        for kind, metric, threshold in (
            ("errors", rate, thresholds.max_error_rate),
            ("latency", variant_metric(endpoint, variant, "ModelLatency", "p99"), thresholds.max_p99_latency_ms * 1000),
        ):  # ModelLatency is in microseconds
            self.alarms.append(
                metric.create_alarm(
                    scope,
                    f"{kind.capitalize()}{variant}",
                    alarm_name=alarm_name(endpoint, variant, kind),
                    threshold=threshold,
                    comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                    evaluation_periods=1,
                    datapoints_to_alarm=1,
                    treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                )
            )
