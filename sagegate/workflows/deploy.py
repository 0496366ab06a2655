"""What the deployment workflow (stepfunctions/deploy_model.asl.json) needs that its states cannot
compute: the endpoint configurations and the weights of every step, the route at every step, the
new variant's alarms, the smoke test's request and verdict, and the shadow comparison.

One Lambda (functions/deploy/handler.py) serves these actions and the autoscaling hand-over of
sagegate.workflows.scaling. `plan` and `check_smoke` are
functions of their input plus the manifest read from S3; `compare_shadow` reads CloudWatch and the
endpoint's data capture and writes its report to S3. Everything else (SageMaker, CloudWatch,
DynamoDB, SNS calls, waits, retries, rollback) is in the state machine as SDK integrations.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ConfigDict, Field, ValidationError

from sagegate.deploy.policy import AlarmThresholds, RolloutPolicy
from sagegate.deploy.routes import next_route
from sagegate.registry.protocol import RegistryError
from sagegate.routing import Route, Variant
from sagegate.workflows.scaling import apply_scaling, release_scaling

__all__ = [
    "DeployRequest",
    "DeploymentRefused",
    "SmokeTestFailed",
    "alarm_name",
    "check_smoke",
    "compare_shadow",
    "handle",
    "plan",
    "variant_alarms",
]

_ALARM_KINDS = ("errors", "latency", "quality")
_BLUE_GREEN_MAX_WAIT_S = 3600  # SageMaker's bound on WaitIntervalInSeconds and TerminationWaitInSeconds


class DeploymentRefused(Exception):
    """The rollout cannot start as asked; nothing has been changed yet."""


class SmokeTestFailed(Exception):
    """The new variant's answer to the manifest's sample is not what the model promises."""


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


def alarm_name(endpoint: str, variant: str, kind: str) -> str:
    """One name for a variant's alarm, shared by the CDK stacks and this workflow."""
    return f"{endpoint}-{variant}-{kind}"


def _dimensions(endpoint: str, variant: str) -> list[dict[str, str]]:
    return [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}]


def _stat(metric_id: str, namespace: str, metric: str, dimensions: list[dict[str, str]], stat: str) -> dict[str, Any]:
    return {
        "Id": metric_id,
        "MetricStat": {
            "Metric": {"Namespace": namespace, "MetricName": metric, "Dimensions": dimensions},
            "Period": 60,
            "Stat": stat,
        },
    }


def variant_alarms(
    model: str, endpoint: str, variant: str, thresholds: AlarmThresholds, *, topic: str | None
) -> list[dict[str, Any]]:
    """PutMetricAlarm requests for one variant: 5XX rate, p99 model latency, and (when asked) the
    gateway's mean prediction confidence as the model-quality signal. All in the metric-query form,
    so that one workflow state creates any of them."""
    dims = _dimensions(endpoint, variant)

    def alarm(
        kind: str, description: str, operator: str, threshold: float, metrics: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return {
            "AlarmName": alarm_name(endpoint, variant, kind),
            "AlarmDescription": description,
            "ComparisonOperator": operator,
            "Threshold": threshold,
            "EvaluationPeriods": 1,
            "DatapointsToAlarm": 1,
            "TreatMissingData": "notBreaching",
            "AlarmActions": [topic] if topic else [],
            "Metrics": metrics,
        }

    alarms = [
        alarm(
            "errors",
            f"{endpoint}/{variant}: 5XX answers above {thresholds.max_error_rate:.2%}",
            "GreaterThanThreshold",
            thresholds.max_error_rate,
            [
                {
                    "Id": "rate",
                    "Expression": f"IF(invocations >= {thresholds.min_requests}, errors / invocations, 0)",
                    "Label": "5XX rate",
                    "ReturnData": True,
                },
                {**_stat("errors", "AWS/SageMaker", "Invocation5XXErrors", dims, "Sum"), "ReturnData": False},
                {**_stat("invocations", "AWS/SageMaker", "Invocations", dims, "Sum"), "ReturnData": False},
            ],
        ),
        alarm(
            "latency",
            f"{endpoint}/{variant}: p99 model latency above {thresholds.max_p99_latency_ms:g} ms",
            "GreaterThanThreshold",
            thresholds.max_p99_latency_ms * 1000,  # ModelLatency is in microseconds
            [{**_stat("p99", "AWS/SageMaker", "ModelLatency", dims, "p99"), "ReturnData": True}],
        ),
    ]
    if thresholds.min_mean_confidence is not None:
        gateway_dims = [{"Name": "model", "Value": model}, {"Name": "variant", "Value": variant}]
        alarms.append(
            alarm(
                "quality",
                f"{model}/{variant}: mean confidence below {thresholds.min_mean_confidence:g} (gateway metric)",
                "LessThanThreshold",
                thresholds.min_mean_confidence,
                [{**_stat("confidence", "sagegate", "confidence", gateway_dims, "Average"), "ReturnData": True}],
            )
        )
    return alarms


# -- plan -----------------------------------------------------------------------------------------


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _name(*parts: str, suffix: str) -> str:
    """A SageMaker resource name (63 characters at most) that keeps its unique suffix."""
    head = "-".join(parts)[: 63 - len(suffix) - 1].rstrip("-")
    return f"{head}-{suffix}"


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


def _weights(route: Route) -> list[dict[str, Any]]:
    return [{"VariantName": v.name, "DesiredWeight": v.weight} for v in route.variants]


def _config(name: str, variants: list[dict[str, Any]], base: dict[str, Any], kms_key: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "EndpointConfigName": name,
        "ProductionVariants": variants,
        "KmsKeyId": base.get("KmsKeyId") or kms_key,
    }
    config["DataCaptureConfig"] = base.get("DataCaptureConfig") or {
        "EnableCapture": False,
        "InitialSamplingPercentage": 0,
        "DestinationS3Uri": "s3://unused/",
        "CaptureOptions": [{"CaptureMode": "Input"}],
    }
    return config


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
    shifts = len(steps)
    return {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": min(request.retention_seconds, _BLUE_GREEN_MAX_WAIT_S),
            "MaximumExecutionTimeoutInSeconds": max(600, min(28_800, shifts * wait + request.max_update_seconds)),
        },
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": a} for a in alarms]},
    }


def _refuse_unless_deployable(request: DeployRequest, endpoint: dict[str, Any], config: dict[str, Any]) -> None:
    name, new = endpoint["EndpointName"], f"v{request.version}"
    live = [v["VariantName"] for v in endpoint.get("ProductionVariants", [])]
    if new in live:
        raise DeploymentRefused(f"{name} already serves {new}: nothing to deploy")
    if config.get("ShadowProductionVariants"):
        raise DeploymentRefused(f"{name} has a shadow variant: finish that rollout first")
    if request.strategy == "replace" and len(live) != 1:
        raise DeploymentRefused(f"replace needs a single-variant endpoint; {name} has {len(live)}: use canary")


def _running_specs(endpoint: dict[str, Any], config: dict[str, Any]) -> list[dict[str, Any]]:
    """The current variants as CreateEndpointConfig wants them, with the weights they have now and
    the instance counts autoscaling gave them."""
    live = {v["VariantName"]: v for v in endpoint.get("ProductionVariants", [])}
    specs = []
    for spec in config["ProductionVariants"]:
        running = live.get(spec["VariantName"], {})
        specs.append(
            {
                **spec,
                "InitialVariantWeight": float(running.get("CurrentWeight", spec.get("InitialVariantWeight", 1))),
                "InitialInstanceCount": int(running.get("CurrentInstanceCount", spec.get("InitialInstanceCount", 1))),
            }
        )
    return specs


class _Planner:
    """The parts of a plan for one request against one endpoint."""

    def __init__(self, request: DeployRequest, state: dict[str, Any], execution: str, kms_key: str) -> None:
        self.request, self.kms_key = request, kms_key
        self.config = state["current_config"]
        self.name = state["current"]["EndpointName"]
        self.new = f"v{request.version}"
        self.suffix = _short(execution)
        self.model_name = _name(self.name, self.new, suffix=self.suffix)
        self.current = _current_route(request.model, state["current"], state.get("route"))
        self.specs = _running_specs(state["current"], self.config)
        main = max(self.specs, key=lambda s: s["InitialVariantWeight"])
        self.new_spec = {
            "VariantName": self.new,
            "ModelName": self.model_name,
            "InstanceType": request.instance_type or main["InstanceType"],
            "InitialInstanceCount": request.instance_count or main["InitialInstanceCount"],
            "InitialVariantWeight": 0.0,
        }
        self.polls = max(1, request.poll_seconds)

    def checks(self, seconds: int) -> int:
        """Alarm checks in a bake of `seconds` (one at least)."""
        return max(1, math.ceil(seconds / self.polls)) if self.request.poll_seconds else 1

    def config_named(self, tag: str, variants: list[dict[str, Any]]) -> dict[str, Any]:
        return _config(_name(self.name, self.new, tag, suffix=self.suffix), variants, self.config, self.kms_key)

    def ramp(self, strategy: str, steps: list[float]) -> dict[str, Any]:
        request, current = self.request, self.current
        routes = [next_route(current, request.model, request.version, traffic=p) for p in steps]
        ramp_config = self.config_named("ramp", [*self.specs, self.new_spec])
        final_config = self.config_named("final", [{**self.new_spec, "InitialVariantWeight": 1.0}])
        checks = self.checks(request.bake_seconds)
        return {
            "strategy": strategy,
            "config": ramp_config,
            "retired_configs": [self.config["EndpointConfigName"], ramp_config["EndpointConfigName"]],
            "teardown_configs": [ramp_config["EndpointConfigName"], final_config["EndpointConfigName"]],
            "steps": [
                {"percent": p, "weights": _weights(r), "route": r.model_dump_json(), "checks": checks}
                for p, r in zip(steps, routes, strict=True)
            ],
            "final_config": final_config,
            "final_route": next_route(current, request.model, request.version, replace=True).model_dump_json(),
            "old_models": sorted({s["ModelName"] for s in self.specs}),
            "old_alarms": [alarm_name(self.name, s["VariantName"], k) for s in self.specs for k in _ALARM_KINDS],
            "old_variants": [s["VariantName"] for s in self.specs],
        }

    def shadow(self) -> dict[str, Any]:
        request = self.request
        mirrored = sum(s["InitialVariantWeight"] for s in self.specs) or 1.0
        config = self.config_named("shadow", self.specs)
        config["ShadowProductionVariants"] = [{**self.new_spec, "InitialVariantWeight": mirrored}]
        route = next_route(self.current, request.model, request.version, shadow=True)
        part: dict[str, Any] = {
            "strategy": "shadow",
            "config": config,
            "teardown_configs": [config["EndpointConfigName"]],
            "steps": [
                {
                    "percent": 0,
                    "weights": None,
                    "route": route.model_dump_json(),
                    "checks": self.checks(request.shadow_seconds),
                }
            ],
            "after_shadow": request.after_shadow,
            "production_variants": sorted(s["VariantName"] for s in self.specs),
        }
        if request.after_shadow == "canary":
            canary = self.ramp("canary", RolloutPolicy(strategy="canary").steps)
            canary["retired_configs"].append(config["EndpointConfigName"])
            canary["teardown_configs"].append(config["EndpointConfigName"])
            part["next"] = canary
        return part

    def replace(self, topic: str | None) -> dict[str, Any]:
        """SageMaker's blue/green on the one variant, which keeps its name (and its alarms)."""
        request = self.request
        (only,) = self.specs
        variant = only["VariantName"]
        config = self.config_named("replace", [{**only, "ModelName": self.model_name}])
        alarms = variant_alarms(request.model, self.name, variant, request.alarms, topic=topic)
        shifting = request.max_update_seconds + len(request.steps) * request.bake_seconds + request.retention_seconds
        return {
            "strategy": "replace",
            "config": config,
            "retired_configs": [self.config["EndpointConfigName"]],
            "teardown_configs": [config["EndpointConfigName"]],
            "alarms": alarms,
            "alarm_names": [a["AlarmName"] for a in alarms],
            "teardown_alarms": [],
            "deployment_config": _blue_green(
                request, [alarm_name(self.name, variant, k) for k in ("errors", "latency")]
            ),
            "final_route": Route(
                model=request.model,
                endpoint=self.name,
                variants=[Variant(name=variant, model_version=request.version, weight=100)],
                split=self.current.split,
                fallback=self.current.fallback,
            ).model_dump_json(),
            "old_models": [only["ModelName"]],
            "old_alarms": [],
            "steps": [],
            "max_polls": math.ceil(shifting / self.polls),
        }


def plan(
    state: dict[str, Any],
    *,
    execution: str,
    manifest_reader: Any,
    kms_key: str = "",
    topic: str | None = None,
) -> dict[str, Any]:
    """Everything the rollout will do, decided before anything changes.

    `state` holds the workflow input, the model package (`package`), DescribeEndpoint
    (`current`), DescribeEndpointConfig (`current_config`) and the route store's item (`route`)."""
    try:
        request = DeployRequest.model_validate(state["input"])
    except ValidationError as exc:
        first = exc.errors()[0]
        raise DeploymentRefused(f"input {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    _refuse_unless_deployable(request, state["current"], state["current_config"])
    manifest = manifest_reader(state["package"]["metadata"]["manifest_uri"])
    planner = _Planner(request, state, execution, kms_key)
    alarms = variant_alarms(request.model, planner.name, planner.new, request.alarms, topic=topic)
    result: dict[str, Any] = {
        "endpoint": planner.name,
        "variant": planner.new,
        "model_name": planner.model_name,
        "current_config": state["current_config"]["EndpointConfigName"],
        "previous_route": planner.current.model_dump_json(),
        "rollback_weights": [*_weights(planner.current), {"VariantName": planner.new, "DesiredWeight": 0.0}],
        "alarms": alarms,
        "alarm_names": [a["AlarmName"] for a in alarms],
        "teardown_alarms": [a["AlarmName"] for a in alarms],
        "poll_seconds": request.poll_seconds,
        "max_polls": math.ceil(request.max_update_seconds / planner.polls),
        "retention_seconds": request.retention_seconds,
        "smoke": {"body": json.dumps({"instances": manifest["sample"]}), "records": len(manifest["sample"])},
    }
    if request.strategy == "shadow":
        result |= planner.shadow()
        if "next" in result:  # the canary that follows a shadow keeps the rest of this plan
            result["next"] = {**result, **result["next"]}
            del result["next"]["next"]
    elif request.strategy == "replace":
        result |= planner.replace(topic)
    else:
        result |= planner.ramp(request.strategy, request.steps)
    return {"input": request.model_dump(mode="json"), "package": state["package"], "plan": result}


# -- smoke test -------------------------------------------------------------------------------------


def check_smoke(state: dict[str, Any]) -> dict[str, Any]:
    """The new variant's answer to the manifest's sample: one prediction per record, each with a
    prediction (and a confidence in [0, 1] where it has one)."""
    expected = int(state["plan"]["smoke"]["records"])
    body = state["smoke"].get("Body")
    if isinstance(body, bytes):
        body = body.decode()
    try:
        answer = json.loads(body) if isinstance(body, str) else body
    except json.JSONDecodeError:
        raise SmokeTestFailed(f"the answer is not JSON: {str(body)[:200]!r}") from None
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    if not isinstance(predictions, list):
        raise SmokeTestFailed(f"the answer has no predictions list: {str(body)[:200]!r}")
    if len(predictions) != expected:
        raise SmokeTestFailed(f"{len(predictions)} predictions for {expected} records")
    for i, p in enumerate(predictions):
        if not isinstance(p, dict) or "prediction" not in p:
            raise SmokeTestFailed(f"prediction {i} has no 'prediction' field: {str(p)[:200]}")
        confidence = p.get("confidence")
        if confidence is not None and not 0 <= float(confidence) <= 1:
            raise SmokeTestFailed(f"prediction {i} has confidence {confidence} outside [0, 1]")
    return {"records": expected, "passed": True}


# -- shadow comparison ------------------------------------------------------------------------------


def _metric_summary(cloudwatch: Any, endpoint: str, variant: str, start: datetime, end: datetime) -> dict[str, Any]:
    period = max(60, int((end - start).total_seconds()) // 60 * 60)
    queries = [
        ("invocations", "Invocations", "Sum"),
        ("errors", "Invocation5XXErrors", "Sum"),
        ("latency_p50_us", "ModelLatency", "p50"),
        ("latency_p99_us", "ModelLatency", "p99"),
    ]
    answer = cloudwatch.get_metric_data(
        MetricDataQueries=[
            {
                "Id": metric_id.replace("_", ""),
                "MetricStat": {
                    "Metric": {
                        "Namespace": "AWS/SageMaker",
                        "MetricName": metric,
                        "Dimensions": _dimensions(endpoint, variant),
                    },
                    "Period": period,
                    "Stat": stat,
                },
            }
            for metric_id, metric, stat in queries
        ],
        StartTime=start,
        EndTime=end,
    )
    by_id = {r["Id"]: r.get("Values", []) for r in answer["MetricDataResults"]}
    summary: dict[str, Any] = {}
    for metric_id, _, stat in queries:
        values = by_id.get(metric_id.replace("_", ""), [])
        summary[metric_id] = (sum(values) if stat == "Sum" else max(values)) if values else None
    invocations, errors = summary["invocations"], summary["errors"]
    summary["error_rate"] = (errors or 0) / invocations if invocations else None
    return summary


def _captured(s3: Any, uri: str, endpoint: str, variant: str, *, since: datetime, limit: int) -> dict[str, Any]:
    """Captured answers of one variant since `since`, keyed by inference id (or the request's hash)."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    prefix = f"{prefix.strip('/')}/{endpoint}/{variant}/".lstrip("/")
    found: dict[str, Any] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["LastModified"] < since:
                continue
            for line in s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode().splitlines():
                if not line.strip():
                    continue
                record = json.loads(line)
                data = record["captureData"]
                key = (
                    record.get("eventMetadata", {}).get("inferenceId")
                    or hashlib.sha256(data["endpointInput"]["data"].encode()).hexdigest()
                )
                found[key] = _labels(data["endpointOutput"])
                if len(found) >= limit:
                    return found
    return found


def _labels(output: dict[str, Any]) -> list[Any]:
    raw = output["data"]
    if output.get("encoding") == "BASE64":
        raw = base64.b64decode(raw).decode()
    answer = json.loads(raw)
    return [p.get("label", p.get("prediction")) for p in answer.get("predictions", [])]


def compare_shadow(
    state: dict[str, Any], *, cloudwatch: Any, s3: Any, report_bucket: str, now: datetime | None = None
) -> dict[str, Any]:
    """Latency, errors and prediction agreement of the shadow variant against production, over the
    time it mirrored traffic; written to S3 and returned."""
    plan_ = state["plan"]
    endpoint, shadow = plan_["endpoint"], plan_["variant"]
    end = now or datetime.now(UTC)
    seconds = int(state["input"].get("shadow_seconds", 3600))
    start = end - timedelta(seconds=max(seconds, 60))
    variants = {v: _metric_summary(cloudwatch, endpoint, v, start, end) for v in plan_["production_variants"]}
    variants[shadow] = _metric_summary(cloudwatch, endpoint, shadow, start, end)
    capture = plan_["config"].get("DataCaptureConfig", {})
    agreement: dict[str, Any] = {"compared": 0, "agreeing": 0, "rate": None}
    if capture.get("EnableCapture"):
        shadow_answers = _captured(s3, capture["DestinationS3Uri"], endpoint, shadow, since=start, limit=50_000)
        for production in plan_["production_variants"]:
            answers = _captured(s3, capture["DestinationS3Uri"], endpoint, production, since=start, limit=50_000)
            for key, labels in answers.items():
                if key in shadow_answers:
                    agreement["compared"] += 1
                    agreement["agreeing"] += int(shadow_answers[key] == labels)
        if agreement["compared"]:
            agreement["rate"] = agreement["agreeing"] / agreement["compared"]
    model, version = state["input"]["model"], state["input"]["version"]
    report = {
        "model": model,
        "version": version,
        "endpoint": endpoint,
        "shadow_variant": shadow,
        "window": {"start": start.isoformat(), "end": end.isoformat()},
        "variants": variants,
        "agreement": agreement,
    }
    key = f"shadow-reports/{model}/v{version}/{_short(json.dumps(report['window']))}.json"
    s3.put_object(
        Bucket=report_bucket, Key=key, Body=json.dumps(report, indent=2).encode(), ContentType="application/json"
    )
    report["uri"] = f"s3://{report_bucket}/{key}"
    return report


# -- the Lambda's entry ------------------------------------------------------------------------------


def handle(event: dict[str, Any], *, clients: Any, settings: dict[str, str]) -> dict[str, Any]:
    """Dispatches one workflow action. Errors are raised with their class name as the workflow's error
    (Lambda reports it as errorType), so the state machine can catch them by name."""
    action = event.get("action")
    state = event.get("state", {})
    if action == "plan":

        def read_manifest(uri: str) -> dict[str, Any]:
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            body: dict[str, Any] = json.loads(clients.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            return body

        try:
            return plan(
                state,
                execution=str(event["execution"]),
                manifest_reader=read_manifest,
                kms_key=settings.get("kms_key", ""),
                topic=settings.get("topic") or None,
            )
        except RegistryError as exc:  # from the route arithmetic
            raise DeploymentRefused(str(exc)) from None
    if action == "check_smoke":
        return check_smoke(state)
    if action == "compare_shadow":
        return compare_shadow(
            state, cloudwatch=clients.cloudwatch, s3=clients.s3, report_bucket=settings["report_bucket"]
        )
    if action == "release_scaling":
        return release_scaling(state, autoscaling=clients.autoscaling)
    if action == "apply_scaling":
        return apply_scaling(state, autoscaling=clients.autoscaling, sagemaker=clients.sagemaker)
    raise DeploymentRefused(f"unknown action {action!r}")
