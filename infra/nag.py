"""cdk-nag (AwsSolutions) acknowledgments. Each is made where the finding is made, on the construct
that holds it, with the reason it is right there: a grep for `acknowledge(` lists every one.

cdk-nag 3 names a finding `AwsSolutions-RULE[detail]` and acknowledges each on its own (no prefix
matching), so the helpers below spell the details the way cdk-nag renders them: a wildcard
resource reads `<LogicalId.Arn>/prefix/*` for a bucket of this stack, and
`arn:<AWS::Partition>:service:region:account:rest` for an ARN built with `Stack.format_arn`.

checkov's skips (`skip_check(`) are made the same way: on the resource, with the reason the check
does not apply to it. Checks that apply to no resource of the project are skipped in .checkov.yaml.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, CfnElement, CfnResource, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct, IConstruct


def acknowledge(construct: IConstruct, finding: str, reason: str) -> None:
    """`finding` is the rule with its detail, e.g. "IAM5[Resource::*]" or "APIG3". Several grants
    can make the same finding on one construct (a role's `Resource::*`): the reasons are joined,
    since CDK keeps one reason per finding and construct."""
    rule = f"AwsSolutions-{finding}"
    earlier = [
        text
        for entry in construct.node.metadata
        if entry.type == "aws:cdk:acknowledged-rules"
        for key, text in (entry.data or {}).items()
        if key.endswith(f"::{rule}")
    ]
    if earlier and reason in earlier[-1]:
        return  # said already
    Validations.of(construct).acknowledge(Acknowledgment(id=rule, reason="; ".join([*earlier[-1:], reason])))


def skip_check(construct: IConstruct, check: str, reason: str) -> None:
    """checkov: `check` (e.g. "CKV_AWS_116") does not apply to this resource, for `reason`. Written
    into the resource's Metadata (checkov.skip), which checkov reads and reports as skipped."""
    resource = construct if isinstance(construct, CfnResource) else construct.node.default_child
    assert isinstance(resource, CfnResource), f"{construct.node.path} is not a resource"
    metadata = resource.get_metadata("checkov") or {}
    skips = [s for s in metadata.get("skip", []) if s["id"] != check]
    resource.add_metadata("checkov", {**metadata, "skip": [*skips, {"id": check, "comment": reason}]})


def default_policy(grantee: iam.IGrantable) -> Construct:
    """The policy that the grants to a role (or a function's role) are written into."""
    policy = policy_holder(grantee).node.find_child("DefaultPolicy")
    assert isinstance(policy, Construct)
    return policy


def wildcard_resource(resource: str) -> str:
    return f"IAM5[Resource::{resource}]"


def wildcard_action(action: str) -> str:
    return f"IAM5[Action::{action}]"


def attribute(construct: IConstruct, suffix: str = "", name: str = "Arn") -> str:
    """How cdk-nag writes an attribute of a resource of this stack and what follows it: `<Id.Arn>:*`."""
    cfn = construct.node.default_child
    assert isinstance(cfn, CfnElement), "a resource of this stack"
    return f"<{Stack.of(construct).get_logical_id(cfn)}.{name}>{suffix}"


def objects(bucket: s3.IBucket, prefix: str = "") -> str:
    """How cdk-nag writes `bucket.arn_for_objects(prefix + "*")` (a bucket of another stack: by name)."""
    if bucket.node.default_child is None:
        return f"arn:<AWS::Partition>:s3:::{bucket.bucket_name}/{prefix}*"
    return attribute(bucket, f"/{prefix}*")


def acknowledge_key_grant(holder: IConstruct, granted: str) -> None:
    """CDK's grants on a KMS-encrypted table, topic or stream add kms:GenerateDataKey* and
    kms:ReEncrypt*, on the one key of this environment."""
    reason = f"CDK's grant on {granted} adds these KMS action families, on this environment's own key only"
    for action in ("kms:GenerateDataKey*", "kms:ReEncrypt*"):
        acknowledge(holder, wildcard_action(action), reason)


def arn(scope: IConstruct, service: str, rest: str, *, account: str | None = None) -> str:
    """How cdk-nag writes an ARN of this stack's account (or `account`) and region, e.g.
    arn(s, "sagemaker", "model/x-*")."""
    stack = Stack.of(scope)
    return f"arn:<AWS::Partition>:{service}:{stack.region}:{account or stack.account}:{rest}"


def policy_holder(grantee: iam.IGrantable) -> Construct:
    """The construct whose subtree holds the grantee's policy (a role, or a function's role)."""
    role = getattr(grantee, "role", None)
    holder = role if role is not None else grantee
    assert isinstance(holder, Construct)
    return holder
