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
    released variant, or, where none was released (A/B), of the heaviest variant that has some."""
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
    template = released[0] if released else None
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
