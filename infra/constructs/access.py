"""S3 access written out action by action (CDK's bucket grants give `s3:GetObject*`, `s3:List*`,
`kms:GenerateDataKey*`...): read, list or write the objects under one prefix of one bucket, with
the bucket key's matching KMS actions. Object keys are not known at deploy time, so the object
resource ends in `prefix*`; that one wildcard is acknowledged here, with the prefix as its reason."""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3

from infra.nag import acknowledge, objects, policy_holder, wildcard_resource


def read_objects(grantee: iam.IGrantable, bucket: s3.IBucket, prefix: str = "", *, why: str) -> None:
    _objects(grantee, bucket, prefix, actions=["s3:GetObject"], key_actions=["kms:Decrypt"], why=why)


def write_objects(grantee: iam.IGrantable, bucket: s3.IBucket, prefix: str = "", *, why: str) -> None:
    # Multipart uploads (large batch outputs, captures) need Decrypt as well as GenerateDataKey.
    _objects(
        grantee,
        bucket,
        prefix,
        actions=["s3:PutObject", "s3:AbortMultipartUpload"],
        key_actions=["kms:GenerateDataKey", "kms:Decrypt"],
        why=why,
    )


def list_objects(grantee: iam.IGrantable, bucket: s3.IBucket, prefix: str = "") -> None:
    iam.Grant.add_to_principal(
        grantee=grantee,
        actions=["s3:ListBucket"],
        resource_arns=[bucket.bucket_arn],
        conditions={"StringLike": {"s3:prefix": [f"{prefix}*"]}} if prefix else None,
    )


def _objects(
    grantee: iam.IGrantable, bucket: s3.IBucket, prefix: str, *, actions: list[str], key_actions: list[str], why: str
) -> None:
    iam.Grant.add_to_principal(grantee=grantee, actions=actions, resource_arns=[bucket.arn_for_objects(f"{prefix}*")])
    if bucket.encryption_key is not None:
        bucket.encryption_key.grant(grantee, *key_actions)
    acknowledge(
        policy_holder(grantee),
        wildcard_resource(objects(bucket, prefix)),
        f"object keys are made at run time; access is to {prefix or 'the objects'}* of this one bucket only: {why}",
    )
