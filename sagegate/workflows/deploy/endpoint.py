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

A model configured without variants (only how it is served) has no package to create the endpoint
from: its first approved version creates it through the deployment workflow, which its approval
event starts. Where a version was approved before the stack existed (no event will come), Create
starts that workflow itself for the latest approved version.

Delete (removal "destroy") takes down what is live then, whoever made it: the variants' scalable
targets and alarms, the endpoint, then its config and models.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sagegate.deploy.policy import AlarmThresholds
from sagegate.routing import Route, Variant
from sagegate.workflows.deploy.alarms import ALARM_KINDS, alarm_name, variant_alarms
from sagegate.workflows.deploy.scaling import Scaling, first_settings, register
from sagegate.workflows.names import sagemaker_name, short_hash

__all__ = ["EndpointSpec", "data_capture", "is_complete", "on_event"]

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


class EndpointSpec(_Spec):
    """What an environment's settings say about one model's endpoint (its first variants)."""

    model: str
    endpoint: str
    variants: list[FirstVariant] = Field(description="none: the first approved version creates the endpoint")
    autoscaling: Scaling
    capture_percent: int = Field(ge=0, le=100)
    alarms: AlarmThresholds

    def model_name(self, variant: FirstVariant) -> str:
        # under the environment's prefix (the workflow's roles are scoped to it), with a hash of what
        # the model is
        return sagemaker_name(self.endpoint, variant.name, suffix=short_hash(f"{variant.model_package_arn}|isolated"))

    def config_name(self) -> str:
        return sagemaker_name(self.endpoint, suffix=short_hash(self.model_dump_json(exclude={"autoscaling", "alarms"})))


class FirstRollout(_Spec):
    """Where a model without configured variants gets its first version: the deployment workflow."""

    state_machine: str
    package_group: str = Field(description="the model's package group, by ARN where the registry is elsewhere")
    input: dict[str, Any] = Field(description="the approval rule's input but for model and version")


class _Properties(_Spec):
    spec: EndpointSpec
    execution_role_arn: str
    kms_key_arn: str
    capture_uri: str
    topic_arn: str | None
    route_table: str | None
    first_rollout: FirstRollout | None


def _properties(event: dict[str, Any]) -> _Properties:
    """CloudFormation hands every property over as text: the spec is one JSON document."""
    props = event["ResourceProperties"]
    first = props.get("FirstRollout")
    return _Properties(
        spec=EndpointSpec.model_validate(json.loads(props["Spec"])),
        execution_role_arn=props["ExecutionRoleArn"],
        kms_key_arn=props["KmsKeyArn"],
        capture_uri=props["CaptureUri"],
        topic_arn=props.get("TopicArn") or None,
        route_table=props.get("RouteTable") or None,
        first_rollout=FirstRollout.model_validate(json.loads(first)) if first else None,
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
    if described is None and not props.spec.variants:
        started = _start_first_rollout(clients, props, request_id=str(event.get("RequestId", "")))
        return {"PhysicalResourceId": name, "Data": {"EndpointName": name, "Created": "false", "Started": started}}
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
        if props.route_table:
            _first_route(clients.dynamodb, props.route_table, props.spec)
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


def _first_route(dynamodb: Any, table: str, spec: EndpointSpec) -> None:
    """The route that sends the gateway's traffic to the endpoint just made: to the variants it
    serves, the spec's. A route already there (a rollout's, when the endpoint was deleted by hand
    and made again from the settings) keeps its settings (split, fallback, cache, time budget) but
    names these variants: the ones it named are gone with the endpoint."""
    total = sum(v.weight for v in spec.variants)
    variants = [
        Variant(name=v.name, model_version=v.model_package_arn.rsplit("/", 1)[-1], weight=v.weight / total * 100)
        for v in spec.variants
    ]
    key = {"model": {"S": spec.model}, "kind": {"S": "route"}}
    found = dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item") or {}
    if "route" in found:
        current = Route.model_validate_json(found["route"]["S"])
        if current.endpoint == spec.endpoint and current.variants == variants:
            return
        route = Route.model_validate(
            {**current.model_dump(), "endpoint": spec.endpoint, "variants": variants, "shadow": None}
        )
        reason = "endpoint made again by cdk deploy"
    else:
        route = Route(model=spec.model, endpoint=spec.endpoint, variants=variants)
        reason = "endpoint created by cdk deploy"
    dynamodb.update_item(
        TableName=table,
        Key=key,
        UpdateExpression="SET #route = :route, #reason = :reason, #at = :at ADD #revision :one",
        ExpressionAttributeNames={"#route": "route", "#reason": "reason", "#at": "changed_at", "#revision": "revision"},
        ExpressionAttributeValues={
            ":route": {"S": route.model_dump_json()},
            ":reason": {"S": reason},
            ":at": {"S": datetime.now(UTC).isoformat()},
            ":one": {"N": "1"},
        },
    )


def _start_first_rollout(clients: Any, props: _Properties, *, request_id: str) -> str:
    """Starts the deployment workflow for the latest approved version of a model that has no endpoint
    (approved before this stack existed, so no approval event will start it); answers the
    execution's name, or "" where no version is approved yet (its approval will start it)."""
    first = props.first_rollout
    if first is None:
        return ""
    found = clients.sagemaker.list_model_packages(
        ModelPackageGroupName=first.package_group,
        ModelApprovalStatus="Approved",
        SortBy="CreationTime",
        SortOrder="Descending",
        MaxResults=1,
    )["ModelPackageSummaryList"]
    if not found:
        return ""
    version = str(found[0]["ModelPackageVersion"])
    model = props.spec.model
    # one name per CloudFormation request: the provider asking again starts nothing twice
    name = sagemaker_name(f"{model}-v{version}-first", suffix=short_hash(request_id or version))
    payload = {"model": model, "version": version, "approval": "Approved", "trigger": "approval", **first.input}
    try:
        clients.sfn.start_execution(stateMachineArn=first.state_machine, name=name, input=json.dumps(payload))
    except Exception as exc:  # botocore's ClientError: the same name already started this rollout
        if _code(exc) != "ExecutionAlreadyExists":
            raise
    return name


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
        DataCaptureConfig=data_capture(spec.capture_percent, props.capture_uri, props.kms_key_arn),
    )


def data_capture(percent: int, destination: str, kms_key: str) -> dict[str, Any]:
    """An endpoint config's DataCaptureConfig: requests and answers, `percent` of them, encrypted."""
    return {
        "EnableCapture": percent > 0,
        "InitialSamplingPercentage": percent,
        "DestinationS3Uri": destination,
        **({"KmsKeyId": kms_key} if kms_key else {}),
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
    }


def _resource(endpoint: str, variant: str) -> str:
    return f"endpoint/{endpoint}/variant/{variant}"


def _register_scaling(autoscaling: Any, spec: EndpointSpec) -> None:
    for variant in spec.variants:
        register(
            autoscaling,
            spec.endpoint,
            variant.name,
            first_settings(spec.endpoint, variant.name, spec.autoscaling, gpus=variant.gpus),
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
