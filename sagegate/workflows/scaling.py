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

__all__ = ["apply_scaling", "release_scaling"]

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"


def _resource(endpoint: str, variant: str) -> str:
    return f"endpoint/{endpoint}/variant/{variant}"


def _settings(autoscaling: Any, endpoint: str, variant: str) -> dict[str, Any] | None:
    resource = _resource(endpoint, variant)
    targets = autoscaling.describe_scalable_targets(
        ServiceNamespace=NAMESPACE, ResourceIds=[resource], ScalableDimension=DIMENSION
    )["ScalableTargets"]
    if not targets:
        return None
    policies = autoscaling.describe_scaling_policies(
        ServiceNamespace=NAMESPACE, ResourceId=resource, ScalableDimension=DIMENSION
    )["ScalingPolicies"]
    kept = ("PolicyName", "PolicyType", "TargetTrackingScalingPolicyConfiguration", "StepScalingPolicyConfiguration")
    return {
        "variant": variant,
        "min": targets[0]["MinCapacity"],
        "max": targets[0]["MaxCapacity"],
        "policies": [{k: p[k] for k in kept if k in p} for p in policies],
    }


def release_scaling(state: dict[str, Any], *, autoscaling: Any) -> dict[str, Any]:
    """Deregister the scalable targets of the variants the final config removes; return their settings."""
    endpoint = state["plan"]["endpoint"]
    released = []
    for variant in state["plan"].get("old_variants", []):
        settings = _settings(autoscaling, endpoint, variant)
        if settings is None:
            continue
        autoscaling.deregister_scalable_target(
            ServiceNamespace=NAMESPACE, ResourceId=_resource(endpoint, variant), ScalableDimension=DIMENSION
        )
        released.append(settings)
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
    released variant, or, where none was released (A/B), of the heaviest variant that has some."""
    endpoint = state["plan"]["endpoint"]
    variants = sorted(
        sagemaker.describe_endpoint(EndpointName=endpoint)["ProductionVariants"],
        key=lambda v: -float(v.get("CurrentWeight", 0.0)),
    )
    have = {v["VariantName"]: _settings(autoscaling, endpoint, v["VariantName"]) for v in variants}
    released = (state.get("scaling") or {}).get("released") or []
    template = released[0] if released else next((s for s in have.values() if s is not None), None)
    if template is None:
        return {"registered": []}  # nothing on this endpoint scales: nothing to carry over
    registered = []
    for name, settings in have.items():
        if settings is not None:
            continue
        own = next((r for r in released if r["variant"] == name), template)  # an old variant gets its own back
        resource = _resource(endpoint, name)
        autoscaling.register_scalable_target(
            ServiceNamespace=NAMESPACE,
            ResourceId=resource,
            ScalableDimension=DIMENSION,
            MinCapacity=own["min"],
            MaxCapacity=own["max"],
        )
        for policy in own["policies"]:
            autoscaling.put_scaling_policy(
                ServiceNamespace=NAMESPACE,
                ResourceId=resource,
                ScalableDimension=DIMENSION,
                **_renamed(policy, own["variant"], name),
            )
        registered.append(name)
    return {"registered": registered}
