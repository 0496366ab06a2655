"""Application Auto Scaling across a rollout (the deployment workflow's `release_scaling` and
`apply_scaling` actions).

SageMaker refuses an UpdateEndpoint that removes a variant registered as a scalable target, so
before the final config drops the old variants their targets are deregistered, and their settings
(capacity bounds and policies) are kept in the execution's state. Once the endpoint serves its new
config, every variant on it without a target gets those settings: the new variant scales the way
the one it replaced did, with the policies' metric dimensions renamed to it (the GPU policy tracks
its own variant's GPUUtilization). The same call puts the old variants back under scaling when the
final update fails, and gives an A/B variant the settings of the variant it shares traffic with.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Scaling", "apply_scaling", "first_settings", "register", "release_scaling"]

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"


def _resource(endpoint: str, variant: str) -> str:
    return f"endpoint/{endpoint}/variant/{variant}"


class Scaling(BaseModel):
    """An environment's autoscaling settings for a model's first variant."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_instances: int = Field(ge=1)
    max_instances: int = Field(ge=1)
    invocations_per_instance: int = Field(ge=1)
    gpu_utilization_percent: float = Field(gt=0, le=100)


def first_settings(endpoint: str, variant: str, bounds: Scaling, *, gpus: int) -> dict[str, Any]:
    """A first variant's settings, in the form `release_scaling` keeps them: it scales on invocations
    per instance, and a GPU variant on its own GPUs' utilization too (summed over the instance's
    GPUs: 100 x GPU count at saturation)."""
    cooldowns = {"ScaleInCooldown": 300, "ScaleOutCooldown": 60}
    policies: list[dict[str, Any]] = [
        {
            "PolicyName": "invocations-per-instance",
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": {
                "TargetValue": float(bounds.invocations_per_instance),
                "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
                **cooldowns,
            },
        }
    ]
    if gpus:
        policies.append(
            {
                "PolicyName": "gpu-utilization",
                "PolicyType": "TargetTrackingScaling",
                "TargetTrackingScalingPolicyConfiguration": {
                    "TargetValue": bounds.gpu_utilization_percent * gpus,
                    "CustomizedMetricSpecification": {
                        "MetricName": "GPUUtilization",
                        "Namespace": "/aws/sagemaker/Endpoints",
                        "Dimensions": [
                            {"Name": "EndpointName", "Value": endpoint},
                            {"Name": "VariantName", "Value": variant},
                        ],
                        "Statistic": "Average",
                    },
                    **cooldowns,
                },
            }
        )
    return {"variant": variant, "min": bounds.min_instances, "max": bounds.max_instances, "policies": policies}


def register(autoscaling: Any, endpoint: str, name: str, settings: dict[str, Any]) -> None:
    """Puts variant `name` under scaling with `settings` (another variant's: its policies' dimensions
    renamed to this one). Every call may be made again."""
    resource = _resource(endpoint, name)
    autoscaling.register_scalable_target(
        ServiceNamespace=NAMESPACE,
        ResourceId=resource,
        ScalableDimension=DIMENSION,
        MinCapacity=settings["min"],
        MaxCapacity=settings["max"],
    )
    for policy in settings["policies"]:
        autoscaling.put_scaling_policy(
            ServiceNamespace=NAMESPACE,
            ResourceId=resource,
            ScalableDimension=DIMENSION,
            **_renamed(policy, settings["variant"], name),
        )


def _targets(autoscaling: Any, endpoint: str, variants: list[str]) -> dict[str, dict[str, Any]]:
    """The scalable targets of these variants (one call), by variant name."""
    if not variants:
        return {}
    found = autoscaling.describe_scalable_targets(
        ServiceNamespace=NAMESPACE, ResourceIds=[_resource(endpoint, v) for v in variants], ScalableDimension=DIMENSION
    )["ScalableTargets"]
    return {target["ResourceId"].rsplit("/", 1)[-1]: target for target in found}


def _settings(autoscaling: Any, endpoint: str, variant: str, target: dict[str, Any]) -> dict[str, Any]:
    policies = autoscaling.describe_scaling_policies(
        ServiceNamespace=NAMESPACE, ResourceId=_resource(endpoint, variant), ScalableDimension=DIMENSION
    )["ScalingPolicies"]
    kept = ("PolicyName", "PolicyType", "TargetTrackingScalingPolicyConfiguration", "StepScalingPolicyConfiguration")
    return {
        "variant": variant,
        "min": target["MinCapacity"],
        "max": target["MaxCapacity"],
        "policies": [{k: p[k] for k in kept if k in p} for p in policies],
    }


def release_scaling(state: dict[str, Any], *, autoscaling: Any) -> dict[str, Any]:
    """Deregister the scalable targets of the variants the final config removes; return their settings."""
    endpoint = state["plan"]["endpoint"]
    old = state["plan"].get("old_variants", [])
    targets = _targets(autoscaling, endpoint, old)
    released = []
    for variant in old:
        if variant not in targets:
            continue
        released.append(_settings(autoscaling, endpoint, variant, targets[variant]))
        autoscaling.deregister_scalable_target(
            ServiceNamespace=NAMESPACE, ResourceId=_resource(endpoint, variant), ScalableDimension=DIMENSION
        )
    return {"released": released}


def _renamed(policy: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """The policy for another variant: dimensions that named the old variant name the new one."""
    policy = copy.deepcopy(policy)
    metric = policy.get("TargetTrackingScalingPolicyConfiguration", {}).get("CustomizedMetricSpecification", {})
    for dimension in metric.get("Dimensions", []):
        if dimension.get("Name") == "VariantName" and dimension.get("Value") == old:
            dimension["Value"] = new
    return policy


def apply_scaling(state: dict[str, Any], *, autoscaling: Any, sagemaker: Any) -> dict[str, Any]:
    """Every variant now on the endpoint without a scalable target gets the settings of the main
    released variant, or, where none was released (A/B), of the heaviest variant that has some, or,
    on an endpoint the rollout created (its first version), the environment's (`plan.scaling`)."""
    endpoint = state["plan"]["endpoint"]
    variants = [
        v["VariantName"]
        for v in sorted(
            sagemaker.describe_endpoint(EndpointName=endpoint)["ProductionVariants"],
            key=lambda v: -float(v.get("CurrentWeight", 0.0)),
        )
    ]
    targets = _targets(autoscaling, endpoint, variants)
    released = (state.get("scaling") or {}).get("released") or []
    template = released[0] if released else state["plan"].get("scaling")
    if template is None:
        heaviest = next((v for v in variants if v in targets), None)
        if heaviest is None:
            return {"registered": []}  # nothing on this endpoint scales: nothing to carry over
        template = _settings(autoscaling, endpoint, heaviest, targets[heaviest])
    registered = []
    for name in variants:
        if name in targets:
            continue
        own = next((r for r in released if r["variant"] == name), template)  # an old variant gets its own back
        register(autoscaling, endpoint, name, own)
        registered.append(name)
    return {"registered": registered}
