"""The rollout plan: everything the deployment workflow will do, decided before anything changes.

The `plan` action reads the workflow's input (`DeployRequest`), the model package, the endpoint as it
is (DescribeEndpoint / DescribeEndpointConfig) and the route store's item, and answers one `Plan`:
a `RampPlan` (canary, linear, ab), a `ShadowPlan` or a `ReplacePlan`. The state machine reads these
models' fields as `$.plan.<field>`; tests/unit/workflows/test_plan_contract.py checks every such path
of stepfunctions/deploy_model.asl.json against the plan of each strategy that reaches it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sagegate.deploy.policy import RolloutPolicy
from sagegate.deploy.routes import next_route
from sagegate.routing import Route, Variant
from sagegate.workflows.deploy.alarms import ALARM_KINDS, alarm_name, variant_alarms
from sagegate.workflows.deploy.endpoint import data_capture
from sagegate.workflows.deploy.scaling import Scaling, first_settings
from sagegate.workflows.names import sagemaker_name, short_hash

__all__ = [
    "DeployRequest",
    "DeploymentRefused",
    "EndpointConfigSpec",
    "FirstEndpoint",
    "FirstPlan",
    "Plan",
    "PlannedRollout",
    "RampPlan",
    "ReplacePlan",
    "ShadowPlan",
    "make_plan",
    "plan",
]

_BLUE_GREEN_MAX_WAIT_S = 3600  # SageMaker's bound on WaitIntervalInSeconds and TerminationWaitInSeconds


class DeploymentRefused(Exception):
    """The rollout cannot start as asked; nothing has been changed yet."""


class FirstEndpoint(BaseModel):
    """How the environment serves a model's first version: the endpoint a rollout creates when the
    model has none yet (the environment's settings, carried in the approval rule's input)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    instance_type: str
    instance_count: int = Field(default=1, ge=1)
    gpus: int = Field(default=0, ge=0)
    autoscaling: Scaling
    capture_percent: int = Field(default=20, ge=0, le=100)


class DeployRequest(RolloutPolicy):
    """The workflow's input: the rollout policy plus what it applies to. EventBridge passes the
    package version as a number; it is a string everywhere else."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    model: str
    version: str
    endpoint: str | None = Field(default=None, description="defaults to the environment's prefix + model")
    instance_type: str | None = Field(default=None, description="defaults to the current main variant's")
    instance_count: int | None = Field(default=None, ge=1)
    poll_seconds: int = Field(default=30, ge=0, description="between endpoint and alarm checks")
    max_update_seconds: int = Field(default=3600, ge=60, description="an endpoint update that takes longer fails")
    trigger: Literal["approval", "manual"] = Field(
        default="approval",
        description="approval: a registry event, which never re-deploys a version that was rolled back or"
        " shadowed; manual: someone asked (sagegate deploy --target), which may",
    )
    approval: Literal["Approved", "Rejected"] | None = Field(
        default=None, description="the registry's status in the event that started this execution"
    )
    first: FirstEndpoint | None = Field(
        default=None, description="the endpoint to create when there is none (the model's first version)"
    )


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VariantSpec(BaseModel):
    """A ProductionVariant of CreateEndpointConfig; a current variant carries every setting it has."""

    model_config = ConfigDict(extra="allow", frozen=True)

    VariantName: str
    ModelName: str
    InstanceType: str
    InitialInstanceCount: int
    InitialVariantWeight: float


class EndpointConfigSpec(_Shape):
    """A CreateEndpointConfig request."""

    EndpointConfigName: str
    ProductionVariants: list[VariantSpec]
    DataCaptureConfig: dict[str, Any]
    KmsKeyId: str


class ShadowConfigSpec(EndpointConfigSpec):
    ShadowProductionVariants: list[VariantSpec]


class Weight(_Shape):
    VariantName: str
    DesiredWeight: float


class Step(_Shape):
    percent: float
    weights: list[Weight] | None = Field(description="none: SageMaker mirrors the traffic (shadow)")
    route: str = Field(description="the route store's value during this step (JSON of a Route)")
    checks: int = Field(ge=1, description="alarm checks during the bake, one every poll_seconds")


class Smoke(_Shape):
    body: str
    records: int


class _PlanBase(_Shape):
    endpoint: str
    variant: str
    model_name: str
    current_config: str
    previous_route: str
    rollback_weights: list[Weight]
    alarms: list[dict[str, Any]] = Field(description="PutMetricAlarm requests for the new variant")
    alarm_names: list[str]
    teardown_alarms: list[str]
    poll_seconds: int
    max_polls: int
    retention_seconds: int
    smoke: Smoke
    config: EndpointConfigSpec
    teardown_configs: list[str]
    steps: list[Step]


class RampPlan(_PlanBase):
    """canary, linear: weights step by step, then a config with the new variant alone; ab: one step."""

    strategy: Literal["canary", "linear", "ab"]
    retired_configs: list[str]
    final_config: EndpointConfigSpec
    final_route: str
    old_models: list[str]
    old_alarms: list[str]
    old_variants: list[str]


class ShadowPlan(_PlanBase):
    strategy: Literal["shadow"]
    config: ShadowConfigSpec
    after_shadow: Literal["stop", "canary"]
    production_variants: list[str]
    next: RampPlan | None = Field(default=None, description="the canary that follows (after_shadow: canary)")


class ReplacePlan(_PlanBase):
    """SageMaker's blue/green on a single-variant endpoint; the variant keeps its name and alarms."""

    strategy: Literal["replace"]
    retired_configs: list[str]
    deployment_config: dict[str, Any]
    final_route: str
    old_models: list[str]
    old_alarms: list[str]


class FirstPlan(_PlanBase):
    """The model's first version: the endpoint is created with it alone, smoke-tested before the
    route sends it traffic; a failure deletes what was created (there was nothing to go back to)."""

    strategy: Literal["first"]
    retired_configs: list[str]
    final_route: str
    old_models: list[str]
    old_alarms: list[str]
    scaling: dict[str, Any] = Field(description="apply_scaling's settings for the new variant")


Plan = Annotated[RampPlan | ShadowPlan | ReplacePlan | FirstPlan, Field(discriminator="strategy")]


class PlannedRollout(_Shape):
    """The `plan` action's answer: the state the workflow continues with."""

    input: DeployRequest
    package: dict[str, Any]
    plan: Plan


# -- from the endpoint as it is ---------------------------------------------------------------------


def _route_from_endpoint(model: str, endpoint: dict[str, Any]) -> Route:
    """The route the endpoint implies when the route store has none (or one that disagrees with it)."""
    variants = endpoint.get("ProductionVariants", [])
    total = sum(float(v.get("CurrentWeight", 0)) for v in variants) or float(len(variants))
    return Route(
        model=model,
        endpoint=endpoint["EndpointName"],
        variants=[
            Variant(
                name=v["VariantName"],
                model_version=m.group(1) if (m := re.fullmatch(r"v(\d+)", v["VariantName"])) else v["VariantName"],
                weight=round(float(v.get("CurrentWeight", 1)) / total * 100, 4),
            )
            for v in variants
        ],
    )


def _current_route(model: str, endpoint: dict[str, Any], stored: dict[str, Any] | None) -> Route:
    derived = _route_from_endpoint(model, endpoint)
    item = (stored or {}).get("Item") or {}
    if "route" in item:
        route = Route.model_validate_json(item["route"]["S"])
        if {v.name for v in route.variants} == {v.name for v in derived.variants}:
            return route
    return derived


def _weights(route: Route) -> list[Weight]:
    return [Weight(VariantName=v.name, DesiredWeight=v.weight) for v in route.variants]


def _running_specs(endpoint: dict[str, Any], config: dict[str, Any]) -> list[VariantSpec]:
    """The current variants as CreateEndpointConfig wants them, with the weights they have now and
    the instance counts autoscaling gave them."""
    live = {v["VariantName"]: v for v in endpoint.get("ProductionVariants", [])}
    specs = []
    for spec in config["ProductionVariants"]:
        running = live.get(spec["VariantName"], {})
        specs.append(
            VariantSpec.model_validate(
                {
                    **spec,
                    "InitialVariantWeight": float(running.get("CurrentWeight", spec.get("InitialVariantWeight", 1))),
                    "InitialInstanceCount": int(
                        running.get("CurrentInstanceCount", spec.get("InitialInstanceCount", 1))
                    ),
                }
            )
        )
    return specs


def _refuse_unless_deployable(request: DeployRequest, endpoint: dict[str, Any], config: dict[str, Any]) -> None:
    name, new = endpoint["EndpointName"], f"v{request.version}"
    live = [v["VariantName"] for v in endpoint.get("ProductionVariants", [])]
    if new in live:
        raise DeploymentRefused(f"{name} already serves {new}: nothing to deploy")
    if config.get("ShadowProductionVariants"):
        raise DeploymentRefused(f"{name} has a shadow variant: finish that rollout first")
    if request.strategy == "replace" and len(live) != 1:
        raise DeploymentRefused(f"replace needs a single-variant endpoint; {name} has {len(live)}: use canary")


def _blue_green(request: DeployRequest, alarms: list[str]) -> dict[str, Any]:
    """UpdateEndpoint's DeploymentConfig for `replace`: SageMaker's own canary or linear shift."""
    steps = request.steps
    wait = min(request.bake_seconds, _BLUE_GREEN_MAX_WAIT_S)
    routing: dict[str, Any]
    if len(steps) == 1:
        routing = {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": wait}
    elif len(steps) == 2:
        routing = {
            "Type": "CANARY",
            "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": int(steps[0])},
            "WaitIntervalInSeconds": wait,
        }
    else:
        gaps = {round(b - a, 6) for a, b in zip([0.0, *steps], steps, strict=False)}
        if len(gaps) != 1:
            raise DeploymentRefused(f"replace: linear steps must be evenly spaced, not {steps}")
        routing = {
            "Type": "LINEAR",
            "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": int(steps[0])},
            "WaitIntervalInSeconds": wait,
        }
    return {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": min(request.retention_seconds, _BLUE_GREEN_MAX_WAIT_S),
            "MaximumExecutionTimeoutInSeconds": max(600, min(28_800, len(steps) * wait + request.max_update_seconds)),
        },
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": a} for a in alarms]},
    }


# -- the planner ------------------------------------------------------------------------------------


class _Planner:
    """The parts of a plan for one request against one endpoint."""

    def __init__(
        self, request: DeployRequest, state: dict[str, Any], execution: str, kms_key: str, topic: str | None
    ) -> None:
        self.request, self.kms_key = request, kms_key
        self.config = state["current_config"]
        self.name = state["current"]["EndpointName"]
        self.new = f"v{request.version}"
        self.suffix = short_hash(execution)
        self.model_name = sagemaker_name(self.name, self.new, suffix=self.suffix)
        self.current = _current_route(request.model, state["current"], state.get("route"))
        self.specs = _running_specs(state["current"], self.config)
        main = max(self.specs, key=lambda s: s.InitialVariantWeight)
        self.new_spec = VariantSpec(
            VariantName=self.new,
            ModelName=self.model_name,
            InstanceType=request.instance_type or main.InstanceType,
            InitialInstanceCount=request.instance_count or main.InitialInstanceCount,
            InitialVariantWeight=0.0,
        )
        self.polls = max(1, request.poll_seconds)
        self.alarms = variant_alarms(request.model, self.name, self.new, request.alarms, topic=topic)

    def checks(self, seconds: int) -> int:
        """Alarm checks in a bake of `seconds` (one at least)."""
        return max(1, math.ceil(seconds / self.polls)) if self.request.poll_seconds else 1

    def config_named(self, tag: str, variants: list[VariantSpec]) -> EndpointConfigSpec:
        return EndpointConfigSpec(
            EndpointConfigName=sagemaker_name(self.name, self.new, tag, suffix=self.suffix),
            ProductionVariants=variants,
            KmsKeyId=self.config.get("KmsKeyId") or self.kms_key,
            DataCaptureConfig=self.config.get("DataCaptureConfig")
            or {
                "EnableCapture": False,
                "InitialSamplingPercentage": 0,
                "DestinationS3Uri": "s3://unused/",
                "CaptureOptions": [{"CaptureMode": "Input"}],
            },
        )

    def base(self, smoke: Smoke) -> dict[str, Any]:
        """What every strategy's plan has: the new variant, its alarms, the smoke test, the way back."""
        request = self.request
        return {
            "endpoint": self.name,
            "variant": self.new,
            "model_name": self.model_name,
            "current_config": self.config["EndpointConfigName"],
            "previous_route": self.current.model_dump_json(),
            "rollback_weights": [*_weights(self.current), Weight(VariantName=self.new, DesiredWeight=0.0)],  # ramp
            "alarms": self.alarms,
            "alarm_names": [a["AlarmName"] for a in self.alarms],
            "teardown_alarms": [a["AlarmName"] for a in self.alarms],
            "poll_seconds": request.poll_seconds,
            "max_polls": math.ceil(request.max_update_seconds / self.polls),
            "retention_seconds": request.retention_seconds,
            "smoke": smoke,
        }

    def ramp(self, base: dict[str, Any], strategy: str, steps: list[float]) -> RampPlan:
        request, current = self.request, self.current
        routes = [next_route(current, request.model, request.version, traffic=p) for p in steps]
        ramp_config = self.config_named("ramp", [*self.specs, self.new_spec])
        final_config = self.config_named("final", [self.new_spec.model_copy(update={"InitialVariantWeight": 1.0})])
        checks = self.checks(request.bake_seconds)
        return RampPlan(
            **base,
            strategy=strategy,
            config=ramp_config,
            retired_configs=[self.config["EndpointConfigName"], ramp_config.EndpointConfigName],
            teardown_configs=[ramp_config.EndpointConfigName, final_config.EndpointConfigName],
            steps=[
                Step(percent=p, weights=_weights(r), route=r.model_dump_json(), checks=checks)
                for p, r in zip(steps, routes, strict=True)
            ],
            final_config=final_config,
            final_route=next_route(current, request.model, request.version, replace=True).model_dump_json(),
            old_models=sorted({s.ModelName for s in self.specs}),
            old_alarms=[alarm_name(self.name, s.VariantName, k) for s in self.specs for k in ALARM_KINDS],
            old_variants=[s.VariantName for s in self.specs],
        )

    def shadow(self, base: dict[str, Any]) -> ShadowPlan:
        request = self.request
        mirrored = sum(s.InitialVariantWeight for s in self.specs) or 1.0
        plain = self.config_named("shadow", self.specs)
        config = ShadowConfigSpec(
            **plain.model_dump(),
            ShadowProductionVariants=[self.new_spec.model_copy(update={"InitialVariantWeight": mirrored})],
        )
        route = next_route(self.current, request.model, request.version, shadow=True)
        following = None
        if request.after_shadow == "canary":
            canary = self.ramp(base, "canary", RolloutPolicy(strategy="canary").steps)
            following = canary.model_copy(
                update={
                    "retired_configs": [*canary.retired_configs, config.EndpointConfigName],
                    "teardown_configs": [*canary.teardown_configs, config.EndpointConfigName],
                }
            )
        return ShadowPlan(
            **{**base, "rollback_weights": _weights(self.current)},  # a shadow variant has no weight to reset
            strategy="shadow",
            config=config,
            teardown_configs=[config.EndpointConfigName],
            steps=[
                Step(percent=0, weights=None, route=route.model_dump_json(), checks=self.checks(request.shadow_seconds))
            ],
            after_shadow=request.after_shadow,
            production_variants=sorted(s.VariantName for s in self.specs),
            next=following,
        )

    def replace(self, base: dict[str, Any], topic: str | None) -> ReplacePlan:
        request = self.request
        (only,) = self.specs
        variant = only.VariantName
        config = self.config_named("replace", [only.model_copy(update={"ModelName": self.model_name})])
        alarms = variant_alarms(request.model, self.name, variant, request.alarms, topic=topic)
        shifting = request.max_update_seconds + len(request.steps) * request.bake_seconds + request.retention_seconds
        return ReplacePlan(
            **{
                **base,
                "alarms": alarms,
                "alarm_names": [a["AlarmName"] for a in alarms],
                "teardown_alarms": [],
                "max_polls": math.ceil(shifting / self.polls),
                "rollback_weights": _weights(self.current),  # the one variant keeps its name
            },
            strategy="replace",
            config=config,
            retired_configs=[self.config["EndpointConfigName"]],
            teardown_configs=[config.EndpointConfigName],
            deployment_config=_blue_green(request, [alarm_name(self.name, variant, k) for k in ("errors", "latency")]),
            final_route=Route(
                model=request.model,
                endpoint=self.name,
                variants=[Variant(name=variant, model_version=request.version, weight=100)],
                split=self.current.split,
                fallback=self.current.fallback,
            ).model_dump_json(),
            old_models=[only.ModelName],
            old_alarms=[],
            steps=[],
        )


def _first(
    request: DeployRequest,
    endpoint: str,
    smoke: Smoke,
    *,
    execution: str,
    kms_key: str,
    topic: str | None,
    capture: str,
) -> FirstPlan:
    """The plan of a model's first version, on an endpoint that does not exist yet."""
    first = request.first
    if first is None:
        raise DeploymentRefused(
            f"{endpoint} does not exist and the request says nothing of how to serve a first version: its"
            " first version goes live when it is approved in the registry (the environment's settings name"
            " the instance type)"
        )
    variant, suffix = f"v{request.version}", short_hash(execution)
    model_name = sagemaker_name(endpoint, variant, suffix=suffix)
    config = EndpointConfigSpec(
        EndpointConfigName=sagemaker_name(endpoint, variant, "first", suffix=suffix),
        ProductionVariants=[
            VariantSpec(
                VariantName=variant,
                ModelName=model_name,
                InstanceType=first.instance_type,
                InitialInstanceCount=first.instance_count,
                InitialVariantWeight=1.0,
            )
        ],
        KmsKeyId=kms_key,
        DataCaptureConfig=data_capture(first.capture_percent, capture or "s3://unused/", kms_key),
    )
    alarms = variant_alarms(request.model, endpoint, variant, request.alarms, topic=topic)
    polls = max(1, request.poll_seconds)
    route = Route(
        model=request.model,
        endpoint=endpoint,
        variants=[Variant(name=variant, model_version=request.version, weight=100)],
    )
    return FirstPlan(
        strategy="first",
        endpoint=endpoint,
        variant=variant,
        model_name=model_name,
        current_config="",
        previous_route="",
        rollback_weights=[],
        alarms=alarms,
        alarm_names=[a["AlarmName"] for a in alarms],
        teardown_alarms=[a["AlarmName"] for a in alarms],
        poll_seconds=request.poll_seconds,
        max_polls=math.ceil(request.max_update_seconds / polls),
        retention_seconds=request.retention_seconds,
        smoke=smoke,
        config=config,
        teardown_configs=[config.EndpointConfigName],
        steps=[],
        retired_configs=[],
        final_route=route.model_dump_json(),
        old_models=[],
        old_alarms=[],
        scaling=first_settings(endpoint, variant, first.autoscaling, gpus=first.gpus),
    )


def make_plan(
    state: dict[str, Any],
    *,
    execution: str,
    manifest_reader: Callable[[str], dict[str, Any]],
    kms_key: str = "",
    topic: str | None = None,
    capture: str = "",
) -> PlannedRollout:
    """`state` holds the workflow input, the model package (`package`), DescribeEndpoint
    (`current`), DescribeEndpointConfig (`current_config`) and the route store's item (`route`);
    without `current` the endpoint (`endpoint_name`) does not exist yet: the model's first version
    creates it, data capture to `capture`."""
    try:
        request = DeployRequest.model_validate(state["input"])
    except ValidationError as exc:
        first = exc.errors()[0]
        raise DeploymentRefused(f"input {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    manifest = manifest_reader(state["package"]["metadata"]["manifest_uri"])
    smoke = Smoke(body=json.dumps({"instances": manifest["sample"]}), records=len(manifest["sample"]))
    chosen: RampPlan | ShadowPlan | ReplacePlan | FirstPlan
    if state.get("current") is None:
        chosen = _first(
            request, state["endpoint_name"], smoke, execution=execution, kms_key=kms_key, topic=topic, capture=capture
        )
        return PlannedRollout(input=request, package=state["package"], plan=chosen)
    _refuse_unless_deployable(request, state["current"], state["current_config"])
    planner = _Planner(request, state, execution, kms_key, topic)
    base = planner.base(smoke)
    if request.strategy == "shadow":
        chosen = planner.shadow(base)
    elif request.strategy == "replace":
        chosen = planner.replace(base, topic)
    else:
        chosen = planner.ramp(base, request.strategy, request.steps)
    return PlannedRollout(input=request, package=state["package"], plan=chosen)


def plan(
    state: dict[str, Any],
    *,
    execution: str,
    manifest_reader: Callable[[str], dict[str, Any]],
    kms_key: str = "",
    topic: str | None = None,
    capture: str = "",
) -> dict[str, Any]:
    """The plan as the state machine gets it (JSON)."""
    planned = make_plan(
        state, execution=execution, manifest_reader=manifest_reader, kms_key=kms_key, topic=topic, capture=capture
    )
    return planned.model_dump(mode="json")
