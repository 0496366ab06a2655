"""Who owns an endpoint: CloudFormation creates it once, the rollouts own it after.

A SageMaker endpoint of a configured model is a CloudFormation custom resource (the CDK provider
framework calls `on_event`, then `is_complete` until it answers done), not an AWS::SageMaker::Endpoint
with its config, models and scalable targets. On Create it makes what the environment's settings
name (a model per variant from its model package, an endpoint config with data capture and KMS,
the endpoint), and once the endpoint is InService registers each variant for autoscaling and
creates its alarms, as the deployment workflow does for a variant it adds. From then on the live
variants are the deployment workflow's alone: an Update (any later `cdk deploy`, whatever changed
in cdk.json) leaves a live endpoint as it is, so a deploy after a canary, an A/B test, a shadow,
a replace or a rollback neither fails nor changes what serves traffic, and no scalable target or
alarm that a rollout retired comes back. New versions go live through `sagegate deploy`. An
endpoint that is gone (deleted by hand) is created again from the settings; one that exists at
Create (a stack deleted with `retain`, then deployed again) is adopted as it is.

Delete (removal "destroy") takes down what is live then: the variants' scalable targets and alarms,
the endpoint, then its config and models.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sagegate.deploy.policy import AlarmThresholds
from sagegate.workflows.deploy.alarms import ALARM_KINDS, alarm_name, variant_alarms
from sagegate.workflows.names import sagemaker_name, short_hash

__all__ = ["EndpointSpec", "is_complete", "on_event"]

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FirstVariant(_Spec):
    name: str
    model_package_arn: str
    instance_type: str
    instance_count: int = Field(ge=1)
    weight: float = Field(gt=0)
    gpus: int = Field(default=0, ge=0)


class Scaling(_Spec):
    min_instances: int = Field(ge=1)
    max_instances: int = Field(ge=1)
    invocations_per_instance: int = Field(ge=1)
    gpu_utilization_percent: float = Field(gt=0, le=100)


class EndpointSpec(_Spec):
    """What an environment's settings say about one model's endpoint (its first variants)."""

    model: str
    endpoint: str
    variants: list[FirstVariant] = Field(min_length=1)
    autoscaling: Scaling
    capture_percent: int = Field(ge=0, le=100)
    alarms: AlarmThresholds

    def model_name(self, variant: FirstVariant) -> str:
        # under the environment's prefix (the workflow's roles are scoped to it), with a hash of what
        # the model is
        return sagemaker_name(self.endpoint, variant.name, suffix=short_hash(f"{variant.model_package_arn}|isolated"))

    def config_name(self) -> str:
        return sagemaker_name(self.endpoint, suffix=short_hash(self.model_dump_json(exclude={"autoscaling", "alarms"})))


class _Properties(_Spec):
    spec: EndpointSpec
    execution_role_arn: str
    kms_key_arn: str
    capture_uri: str
    topic_arn: str | None


def _properties(event: dict[str, Any]) -> _Properties:
    """CloudFormation hands every property over as text: the spec is one JSON document."""
    props = event["ResourceProperties"]
    return _Properties(
        spec=EndpointSpec.model_validate(json.loads(props["Spec"])),
        execution_role_arn=props["ExecutionRoleArn"],
        kms_key_arn=props["KmsKeyArn"],
        capture_uri=props["CaptureUri"],
        topic_arn=props.get("TopicArn") or None,
    )


_MISSING = "Could not find"  # SageMaker's ValidationException text for a name that does not exist
_THROTTLED = {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"}
# Statuses in which SageMaker takes a DeleteEndpoint (not while Creating, Updating, SystemUpdating,
# RollingBack or Deleting).
_DELETABLE = {"InService", "Failed", "OutOfService", "UpdateRollbackFailed"}


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _missing(exc: Exception) -> bool:
    return _code(exc) == "ValidationException" and _MISSING in str(exc)


def _described(sagemaker: Any, name: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = sagemaker.describe_endpoint(EndpointName=name)
    except sagemaker.exceptions.ClientError as exc:
        if _missing(exc):
            return None
        raise
    return found


def on_event(event: dict[str, Any], *, clients: Any) -> dict[str, Any]:
    kind = event["RequestType"]
    if kind == "Delete":
        # The resource's own name, not its properties: a Delete may carry properties of another
        # version of this code (after a replacement, the old ones).
        name = str(event["PhysicalResourceId"])
        return {"PhysicalResourceId": name, "Data": _take_down(clients, name)}
    props = _properties(event)
    name = props.spec.endpoint
    described = _described(clients.sagemaker, name)
    if described is None:
        _create(clients.sagemaker, props)
        return {"PhysicalResourceId": name, "Data": {"EndpointName": name, "Created": "true"}}
    # A live endpoint: its variants are the rollouts' (Update), or it is adopted as it is (Create).
    return {"PhysicalResourceId": name, "Data": {"EndpointName": name, "Created": "false"}}


def is_complete(event: dict[str, Any], *, clients: Any) -> dict[str, Any]:
    data = event.get("Data") or {}
    if event["RequestType"] == "Delete":
        return _deleted(clients, str(event["PhysicalResourceId"]), data)
    if data.get("Created") != "true":
        # Nothing was asked of SageMaker: done, whatever the endpoint is doing (a rollout's bake,
        # an update) — a deploy must not wait on, or fail by, the rollouts' work.
        return {"IsComplete": True}
    props = _properties(event)
    name = props.spec.endpoint
    described = _described(clients.sagemaker, name)
    if described is None:
        raise RuntimeError(f"endpoint {name} is gone while it was being created")
    status = described["EndpointStatus"]
    if status == "Failed":
        raise RuntimeError(f"endpoint {name} failed: {described.get('FailureReason', 'no reason given')}")
    if status != "InService":
        return {"IsComplete": False}
    try:  # every call here may be made again: the waiter asks again after a throttle
        _register_scaling(clients.autoscaling, props.spec)
        for alarm in (a for v in props.spec.variants for a in _alarms(props, v.name)):
            clients.cloudwatch.put_metric_alarm(**alarm)
    except Exception as exc:  # botocore's ClientError, after its own retries
        if _code(exc) in _THROTTLED:
            return {"IsComplete": False}
        raise
    return {"IsComplete": True}


def _deleted(clients: Any, name: str, data: dict[str, Any]) -> dict[str, Any]:
    """Done once the endpoint is gone and its config and models are deleted after it."""
    described = _described(clients.sagemaker, name)
    if described is not None:
        if described["EndpointStatus"] in _DELETABLE:  # it was busy when the Delete came
            clients.sagemaker.delete_endpoint(EndpointName=name)
        return {"IsComplete": False}
    _delete_quietly(clients.sagemaker.delete_endpoint_config, EndpointConfigName=data.get("Config"))
    for model in filter(None, str(data.get("Models", "")).split(",")):
        _delete_quietly(clients.sagemaker.delete_model, ModelName=model)
    return {"IsComplete": True}


def _alarms(props: _Properties, variant: str) -> list[dict[str, Any]]:
    spec = props.spec
    return variant_alarms(spec.model, spec.endpoint, variant, spec.alarms, topic=props.topic_arn)


def _exists(describe: Any, **name: str) -> bool:
    try:
        describe(**name)
    except Exception as exc:  # botocore's ClientError
        if _missing(exc):
            return False
        raise
    return True


def _create(sagemaker: Any, props: _Properties) -> None:
    """The models, the config and the endpoint, each only if absent: a Create that failed half-way
    (the endpoint refused after its config was made), or an endpoint deleted by hand with its config
    and models left, is created again without 'already existing' errors. (Their names hash what
    they are, so one that exists is the one wanted.)"""
    spec = props.spec
    for variant in spec.variants:
        if _exists(sagemaker.describe_model, ModelName=spec.model_name(variant)):
            continue
        sagemaker.create_model(
            ModelName=spec.model_name(variant),
            ExecutionRoleArn=props.execution_role_arn,
            EnableNetworkIsolation=True,
            PrimaryContainer={"ModelPackageName": variant.model_package_arn},
        )
    if not _exists(sagemaker.describe_endpoint_config, EndpointConfigName=spec.config_name()):
        _create_config(sagemaker, props)
    sagemaker.create_endpoint(EndpointName=spec.endpoint, EndpointConfigName=spec.config_name())


def _create_config(sagemaker: Any, props: _Properties) -> None:
    spec = props.spec
    sagemaker.create_endpoint_config(
        EndpointConfigName=spec.config_name(),
        ProductionVariants=[
            {
                "VariantName": v.name,
                "ModelName": spec.model_name(v),
                "InstanceType": v.instance_type,
                "InitialInstanceCount": v.instance_count,
                "InitialVariantWeight": v.weight,
            }
            for v in spec.variants
        ],
        KmsKeyId=props.kms_key_arn,
        DataCaptureConfig={
            "EnableCapture": spec.capture_percent > 0,
            "InitialSamplingPercentage": spec.capture_percent,
            "DestinationS3Uri": props.capture_uri,
            "KmsKeyId": props.kms_key_arn,
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        },
    )


def _resource(endpoint: str, variant: str) -> str:
    return f"endpoint/{endpoint}/variant/{variant}"


def _register_scaling(autoscaling: Any, spec: EndpointSpec) -> None:
    """Each first variant scales on invocations per instance, and a GPU variant on its own GPUs'
    utilization too (summed over the instance's GPUs: 100 x GPU count at saturation)."""
    bounds = spec.autoscaling
    for variant in spec.variants:
        resource = _resource(spec.endpoint, variant.name)
        target = {"ServiceNamespace": NAMESPACE, "ResourceId": resource, "ScalableDimension": DIMENSION}
        autoscaling.register_scalable_target(
            **target, MinCapacity=bounds.min_instances, MaxCapacity=bounds.max_instances
        )
        autoscaling.put_scaling_policy(
            **target,
            PolicyName="invocations-per-instance",
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": float(bounds.invocations_per_instance),
                "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
                "ScaleInCooldown": 300,
                "ScaleOutCooldown": 60,
            },
        )
        if variant.gpus:
            autoscaling.put_scaling_policy(
                **target,
                PolicyName="gpu-utilization",
                PolicyType="TargetTrackingScaling",
                TargetTrackingScalingPolicyConfiguration={
                    "TargetValue": bounds.gpu_utilization_percent * variant.gpus,
                    "CustomizedMetricSpecification": {
                        "MetricName": "GPUUtilization",
                        "Namespace": "/aws/sagemaker/Endpoints",
                        "Dimensions": [
                            {"Name": "EndpointName", "Value": spec.endpoint},
                            {"Name": "VariantName", "Value": variant.name},
                        ],
                        "Statistic": "Average",
                    },
                    "ScaleInCooldown": 300,
                    "ScaleOutCooldown": 60,
                },
            )


def _take_down(clients: Any, name: str) -> dict[str, str]:
    """Starts deleting what is live now (whatever rollouts made it): returns the config and models
    to delete once the endpoint is gone."""
    described = _described(clients.sagemaker, name)
    if described is None:
        return {}
    variants = [v["VariantName"] for v in described.get("ProductionVariants", [])]
    variants += [v["VariantName"] for v in described.get("ShadowProductionVariants", [])]
    if variants:
        targets = clients.autoscaling.describe_scalable_targets(
            ServiceNamespace=NAMESPACE, ResourceIds=[_resource(name, v) for v in variants], ScalableDimension=DIMENSION
        )["ScalableTargets"]
        for target in targets:
            clients.autoscaling.deregister_scalable_target(
                ServiceNamespace=NAMESPACE, ResourceId=target["ResourceId"], ScalableDimension=DIMENSION
            )
        clients.cloudwatch.delete_alarms(AlarmNames=[alarm_name(name, v, k) for v in variants for k in ALARM_KINDS])
    config = described["EndpointConfigName"]
    shape = clients.sagemaker.describe_endpoint_config(EndpointConfigName=config)
    models = [v["ModelName"] for v in [*shape["ProductionVariants"], *shape.get("ShadowProductionVariants", [])]]
    if described["EndpointStatus"] in _DELETABLE:  # else is_complete deletes it once it may
        clients.sagemaker.delete_endpoint(EndpointName=name)
    return {"Config": config, "Models": ",".join(sorted(set(models)))}


def _delete_quietly(delete: Any, **names: Any) -> None:
    """Deletes what is still there; what is already gone is what was wanted."""
    if not all(names.values()):
        return
    try:
        delete(**names)
    except Exception as exc:  # botocore's ClientError, with the service's code
        if not _missing(exc):
            raise
