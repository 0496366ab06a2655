"""The registry in AWS (SageMakerRegistry) against moto, every request validated by botocore's model
of the SageMaker API (its parameter patterns and lengths, which moto does not check): an approval
without a reason, and the monitoring baseline kept beside the manifest with its hash checked.

What moto cannot prove: SageMaker's own handling of CustomerMetadataPropertiesToRemove (moto keeps
the properties as sent); the request is checked against the model instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from sagegate.packaging import BuiltPackage
from sagegate.registry.protocol import RegistryError
from sagegate.registry.sagemaker import SageMakerRegistry


@pytest.fixture
def registry() -> Iterator[SageMakerRegistry]:
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket="registry", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield SageMakerRegistry(
            boto3.client("sagemaker", region_name="eu-west-1"), s3, bucket="registry", image_uri="img:1"
        )


def test_an_approval_without_a_reason_sends_no_empty_metadata(
    registry: SageMakerRegistry, fraud_logreg: BuiltPackage
) -> None:
    """SageMaker refuses an empty CustomerMetadataProperties value (1 to 256 characters): the approval
    of `sagegate models approve NAME V` without --reason failed in AWS with a ParamValidationError."""
    version, _ = registry.register(fraud_logreg.path)
    approved = registry.approve(version.model, version.version, by="ci")
    assert approved.status.value == "Approved" and approved.decided_by == "ci" and approved.decision_reason is None
    again = registry.approve(version.model, version.version, by="ci", reason="holdout AUC 0.93")
    assert again.decision_reason == "holdout AUC 0.93"


def test_the_baseline_is_kept_beside_the_manifest_and_checked(
    registry: SageMakerRegistry, fraud_logreg: BuiltPackage
) -> None:
    assert fraud_logreg.baseline is not None
    version, _ = registry.register(fraud_logreg.path)
    assert registry.baseline(version.model, version.version) == fraud_logreg.baseline.read_bytes()
    bucket, _, key = version.artifact_uri.removeprefix("s3://").partition("/")
    name = fraud_logreg.baseline.name
    registry._s3.put_object(Bucket=bucket, Key=f"{key.rpartition('/')[0]}/{name}", Body=b"{}")
    with pytest.raises(RegistryError, match="does not match the sha256"):
        registry.baseline(version.model, version.version)


def test_packages_take_the_buckets_kms_key_when_no_key_is_named(fraud_logreg: BuiltPackage) -> None:
    """The stack's registry bucket encrypts with the environment's KMS key by default; a package
    registered without a key named (a profile's kms_key_id) must not override that with SSE-S3 (AES256). moto applies
    the bucket's default encryption as S3 does; what it cannot prove is KMS itself (no key use)."""
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        kms = boto3.client("kms", region_name="eu-west-1")
        key = kms.create_key()["KeyMetadata"]["Arn"]
        s3.create_bucket(Bucket="registry", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        rule = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}}
        s3.put_bucket_encryption(Bucket="registry", ServerSideEncryptionConfiguration={"Rules": [rule]})
        registry = SageMakerRegistry(
            boto3.client("sagemaker", region_name="eu-west-1"), s3, bucket="registry", image_uri="img:1"
        )
        version, _ = registry.register(fraud_logreg.path)
        prefix = version.artifact_uri.removeprefix("s3://registry/").rpartition("/")[0]
        objects = s3.list_objects_v2(Bucket="registry", Prefix=prefix)["Contents"]
        assert len(objects) >= 2
        for listed in objects:
            head = s3.head_object(Bucket="registry", Key=listed["Key"])
            assert head["ServerSideEncryption"] == "aws:kms", listed["Key"]
            assert head["SSEKMSKeyId"] == key
