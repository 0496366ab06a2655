"""IAM, checked here because moto does not: which IAM actions on which resources an AWS call needs,
and whether a role's policies (as synthesized) allow them.

An API call becomes IAM requests from policy_sentry's copy of the Service Authorization Reference:
the action's resource types (every required one, or the first whose ARN the call's parameters fill)
with their ARN formats filled from the parameters, plus the dependent actions the reference lists
where the call uses them (iam:PassRole when a role is passed, sagemaker:AddTags when tags are). What
the reference does not list but AWS documents elsewhere is added by `_documented`, each with its
source. The evaluator implements IAM's rules for identity policies and the resource policies of the
template (explicit Deny wins, then any Allow; wildcards in actions and resources; the condition
operators the stacks use; across accounts, both the identity and the resource policy must allow).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import botocore.session
from policy_sentry.shared.iam_data import get_service_prefix_data

__all__ = ["Call", "Request", "evaluate", "requests_for"]


@dataclass(frozen=True)
class Call:
    """One AWS API call as a caller made it (botocore service and operation names, its parameters)."""

    caller: str
    service: str
    operation: str
    params: dict[str, Any]
    facts: dict[str, Any] = field(default_factory=dict)  # what the account held at call time

    def __str__(self) -> str:
        return f"{self.service}:{self.operation}"


@dataclass(frozen=True)
class Request:
    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()
    why: str = ""

    def __str__(self) -> str:
        extra = f" ({self.why})" if self.why else ""
        return f"{self.action} on {self.resource}{extra}"


# botocore service -> IAM service prefix, where they differ; operation -> IAM action, where they differ.
_PREFIX = {"cloudwatch": "cloudwatch", "sagemaker-runtime": "sagemaker", "stepfunctions": "states"}
_ACTION = {
    ("s3", "ListObjectsV2"): "ListBucket",
    ("s3", "HeadObject"): "GetObject",
    ("lambda", "Invoke"): "InvokeFunction",
}
# ARN variables of the reference, filled from these request parameters (a parameter holding an ARN of
# the right kind is used whole).
_VARIABLES = {
    "BucketName": ("Bucket",),
    "ObjectName": ("Key",),
    "FunctionName": ("FunctionName",),
    "StateMachineName": ("stateMachineArn",),
    "ExecutionId": ("executionArn",),
    "StateMachineArn": ("stateMachineArn",),
    "TopicName": ("TopicArn",),
    "ModelPackageName": ("ModelPackageName", "ModelPackageArn"),
    "ModelPackageGroupName": ("ModelPackageGroupName",),
    "SecretId": ("SecretId",),
    "RoleNameWithPath": ("RoleArn", "ExecutionRoleArn"),
    "ResourceId": ("ResourceId",),
    "AlarmName": ("AlarmName", "AlarmNames"),
    "RepositoryName": ("repositoryName",),
    "ProjectName": ("projectName",),
    "WorkGroupName": ("WorkGroup",),
}


@cache
def _service_model(service: str) -> Any:
    return botocore.session.get_session().get_service_model(service)


def iam_prefix(service: str) -> str:
    return _PREFIX.get(service) or str(_service_model(service).signing_name)


@cache
def _privilege(prefix: str, action: str) -> dict[str, Any]:
    data = get_service_prefix_data(prefix)
    if not data or action not in data["privileges"]:
        raise KeyError(f"{prefix}:{action} is not an IAM action (Service Authorization Reference)")
    privilege: dict[str, Any] = data["privileges"][action]
    return privilege


def _arn_format(prefix: str, resource_type: str) -> str:
    return str(get_service_prefix_data(prefix)["resources"][resource_type]["arn"])


def _values(params: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    for name in names:
        value = params.get(name)
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
    return []


def _fill(arn_format: str, params: dict[str, Any], account: str, region: str) -> list[str]:
    """Every ARN of this format that the parameters name; [] when one of its variables is not named."""
    variables = re.findall(r"\$\{([A-Za-z]+)\}", arn_format)
    filled = [arn_format.replace("${Partition}", "aws").replace("${Region}", region).replace("${Account}", account)]
    kind = arn_format.split(":", 5)[5].split("/", maxsplit=1)[0].split(":", maxsplit=1)[0]
    kind = "" if kind.startswith("${") else kind
    for variable in variables:
        if variable in ("Partition", "Region", "Account"):
            continue
        names = _VARIABLES.get(variable, (variable,))
        values = _values(params, names)
        if not values:
            return []
        whole = [v for v in values if v.startswith("arn:")]
        if whole:  # the parameter already is the resource's ARN
            return [v for v in whole if kind in v or not kind]
        filled = [f.replace("${" + variable + "}", v) for f in filled for v in values]
    return filled


def _names_of(arn_format: str) -> list[str]:
    variables = re.findall(r"\$\{([A-Za-z]+)\}", arn_format)
    return [name for v in variables for name in _VARIABLES.get(v, (v,))]


def _resources(prefix: str, action: str, params: dict[str, Any], account: str, region: str) -> list[str]:
    privilege = _privilege(prefix, action)
    types = {k: v for k, v in privilege["resource_types"].items() if k}
    if not types:
        return ["*"]
    required = [t for t, v in types.items() if v["required"]]
    found: list[str] = []
    for resource_type in required or types:
        arns = _fill(_arn_format(prefix, resource_type), params, account, region)
        if any(params.get(name) == [] for name in _names_of(_arn_format(prefix, resource_type))):
            return []  # the call names none of them (DeleteAlarms of no alarms): nothing to authorize
        if required and not arns:
            raise KeyError(f"{prefix}:{action}: no parameter names its {resource_type} ({sorted(params)})")
        found.extend(arns)
        if arns and not required:
            break
    return found or ["*"]


def _documented(call: Call, account: str, region: str) -> list[Request]:
    """Permissions AWS documents for a call beyond the reference's resource types."""
    extra: list[Request] = []
    params = call.params
    if call.service == "application-autoscaling" and params.get("ServiceNamespace") == "sagemaker":
        resource_id = str(params.get("ResourceId", ""))
        endpoint = resource_id.split("/")[1] if resource_id.startswith("endpoint/") else "*"
        alarms = f"arn:aws:cloudwatch:{region}:{account}:alarm:TargetTracking-{resource_id}-*"
        if call.operation == "RegisterScalableTarget":
            # SageMaker developer guide, "Auto scaling prerequisites": the caller of the Application
            # Auto Scaling API needs these SageMaker actions on the endpoint it registers.
            why = "SageMaker auto scaling prerequisites"
            sm = f"arn:aws:sagemaker:{region}:{account}"
            config = call.facts.get("endpoint_config", "*")
            extra += [
                Request("sagemaker:DescribeEndpoint", f"{sm}:endpoint/{endpoint}", why=why),
                Request("sagemaker:DescribeEndpointConfig", f"{sm}:endpoint-config/{config}", why=why),
                Request("sagemaker:UpdateEndpointWeightsAndCapacities", f"{sm}:endpoint/{endpoint}", why=why),
            ]
        if call.operation == "PutScalingPolicy" and params.get("PolicyType") == "TargetTrackingScaling":
            # Application Auto Scaling user guide, identity-based policy examples: target tracking
            # creates and reads its CloudWatch alarms with the caller's permissions.
            why = "target tracking makes its alarms"
            extra += [Request(f"cloudwatch:{a}", alarms, why=why) for a in ("PutMetricAlarm", "DescribeAlarms")]
        if call.operation in ("DeleteScalingPolicy", "DeregisterScalableTarget"):
            extra.append(Request("cloudwatch:DeleteAlarms", alarms, why="removing a target removes its alarms"))
    if call.service == "sagemaker" and call.operation in ("CreateEndpoint", "UpdateEndpoint"):
        # SageMaker API reference, CreateEndpointConfig KmsKeyId: the caller of CreateEndpoint and
        # UpdateEndpoint needs kms:CreateGrant on the config's key.
        key = call.facts.get("endpoint_config_key")
        if key:
            extra += [Request(f"kms:{a}", key, why="the endpoint config's KMS key") for a in ("CreateGrant",)]
    return extra


def requests_for(call: Call, *, account: str, region: str) -> list[Request]:
    """The IAM requests one call makes."""
    prefix = iam_prefix(call.service)
    action = _ACTION.get((call.service, call.operation), call.operation)
    privilege = _privilege(prefix, action)
    # what the request names through another resource (a query execution's workgroup), from the account
    resources = _resources(prefix, action, {**call.facts.get("implied", {}), **call.params}, account, region)
    context: list[tuple[str, str]] = []
    if call.service == "s3" and action == "ListBucket" and "Prefix" in call.params:
        context.append(("s3:prefix", str(call.params["Prefix"])))
    if call.service == "application-autoscaling":  # the condition keys the Reference lists for its actions
        for key, param in (("service-namespace", "ServiceNamespace"), ("scalable-dimension", "ScalableDimension")):
            if param in call.params:
                context.append((f"application-autoscaling:{key}", str(call.params[param])))
    if call.service == "cloudwatch" and call.operation == "PutMetricData":
        context.append(("cloudwatch:namespace", str(call.params.get("Namespace", ""))))
    found = [Request(f"{prefix}:{action}", r, tuple(context)) for r in resources]
    dependent = {a for t in privilege["resource_types"].values() for a in t["dependent_actions"]}
    roles = [v for k, v in call.params.items() if k.endswith("RoleArn") and isinstance(v, str)]
    if "iam:PassRole" in dependent or (roles and prefix == "sagemaker"):
        passed_to = f"{prefix}.amazonaws.com"
        found += [Request("iam:PassRole", r, (("iam:PassedToService", passed_to),), "the role passed") for r in roles]
    if f"{prefix}:AddTags" in dependent and call.params.get("Tags"):
        found += [Request(f"{prefix}:AddTags", r, why="tags on create") for r in resources]
    return found + _documented(call, account, region)


# -- the evaluator --------------------------------------------------------------------------------------


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _matches(pattern: str, value: str, *, case: bool) -> bool:
    if not case:
        pattern, value = pattern.lower(), value.lower()
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def _condition_holds(condition: dict[str, dict[str, Any]], context: dict[str, str]) -> bool:
    for operator, tests in condition.items():
        base = operator.removesuffix("IfExists")
        for key, expected in tests.items():
            actual = context.get(key)
            if actual is None:
                if operator.endswith("IfExists"):
                    continue
                return False
            wanted = [str(e) for e in _listed(expected)]
            if base in ("StringEquals", "ArnEquals"):
                ok = actual in wanted
            elif base in ("StringLike", "ArnLike"):
                ok = any(_matches(w, actual, case=True) for w in wanted)
            elif base == "StringNotEquals":
                ok = actual not in wanted
            elif base == "StringNotLike":
                ok = not any(_matches(w, actual, case=True) for w in wanted)
            elif base == "Bool":
                ok = actual.lower() in [w.lower() for w in wanted]
            else:
                raise NotImplementedError(f"condition operator {operator}")
            if not ok:
                return False
    return True


def _statement_applies(statement: dict[str, Any], request: Request, context: dict[str, str]) -> bool:
    actions = _listed(statement.get("Action", []))
    if "NotAction" in statement:
        if any(_matches(a, request.action, case=False) for a in _listed(statement["NotAction"])):
            return False
    elif not any(_matches(a, request.action, case=False) for a in actions):
        return False
    # SageMaker ARNs carry names in lower case and match case-insensitively; others are exact.
    case = not request.action.startswith("sagemaker:")
    resources = _listed(statement.get("Resource", []))
    if "NotResource" in statement:
        if any(_matches(r, request.resource, case=case) for r in _listed(statement["NotResource"])):
            return False
    elif not any(_matches(r, request.resource, case=case) for r in resources):
        return False
    return _condition_holds(statement.get("Condition", {}), context)


def _account_of(arn: str) -> str:
    return arn.split(":")[4]


def _names_principal(statement: dict[str, Any], principal: str) -> bool:
    """Whether a resource policy statement's Principal covers the calling role: "*", its account
    (root ARN or id: the account delegates to its own IAM, so its conditions narrow it), or its ARN."""
    named = statement.get("Principal")
    if named == "*":
        return True
    if not isinstance(named, dict) or "AWS" not in named:
        return False  # a service principal
    account = _account_of(principal)
    covering = ("*", account, f"arn:aws:iam::{account}:root", principal)
    return any(entry in covering for entry in _listed(named["AWS"]))


def evaluate(
    request: Request,
    identity: list[dict[str, Any]],
    resource_policies: list[dict[str, Any]] | None = None,
    *,
    principal: str | None = None,
    owner: str | None = None,
) -> str:
    """'allowed', 'denied' (an explicit Deny) or 'implicitly denied'.

    Without `principal`, the caller is a role of the resource's account and resource policies only
    add Deny statements (the stacks' buckets deny non-TLS access): an identity Allow suffices. With
    `principal` (the calling role's ARN) and `owner` (the account that owns the resource; taken from
    the resource's ARN when not given), IAM's cross-account rule applies where the two accounts
    differ: the identity policy AND a resource policy statement naming the principal must both
    allow. aws:PrincipalArn and aws:PrincipalAccount are in the context of both."""
    context = {"aws:SecureTransport": "true", **dict(request.context)}
    resource = list(resource_policies or [])
    if principal is not None:
        context |= {"aws:PrincipalArn": principal, "aws:PrincipalAccount": _account_of(principal)}
        resource = [s for s in resource if _names_principal(s, principal)]
    statements = [*identity, *resource]
    if any(s["Effect"] == "Deny" and _statement_applies(s, request, context) for s in statements):
        return "denied"
    allowed_by_identity = any(s["Effect"] == "Allow" and _statement_applies(s, request, context) for s in identity)
    owner = owner or (_account_of(request.resource) if request.resource.count(":") >= 5 else None)
    if principal is None or not owner or owner == _account_of(principal):
        return "allowed" if allowed_by_identity else "implicitly denied"
    allowed_by_resource = any(s["Effect"] == "Allow" and _statement_applies(s, request, context) for s in resource)
    return "allowed" if allowed_by_identity and allowed_by_resource else "implicitly denied"
