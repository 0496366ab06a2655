"""A registry read from another account (`registry_account`): the reader names the registry's groups
by ARN and lists the models it is configured for, since ListModelPackageGroups lists the caller's
own account only.

What moto cannot prove: cross-account access itself (moto keeps one account per client; the reader
here is served from the registry's account, and the IAM side is tests/aws_rules/test_cross_account.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from sagegate.packaging import BuiltPackage
from sagegate.registry.sagemaker import SageMakerRegistry

REGISTRY_ACCOUNT = "444444444444"


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch, fraud_logreg: BuiltPackage) -> Iterator[None]:
    monkeypatch.setenv("MOTO_ACCOUNT_ID", REGISTRY_ACCOUNT)
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket="registry", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        writer = SageMakerRegistry(
            boto3.client("sagemaker", region_name="eu-west-1"), s3, bucket="registry", image_uri="img:1"
        )
        writer.register(fraud_logreg.path)
        yield


def test_a_reader_in_another_account_names_the_registrys_groups_by_arn(registered: None) -> None:
    sagemaker = boto3.client("sagemaker", region_name="eu-west-1")
    named: list[Any] = []
    sagemaker.meta.events.register(
        "before-parameter-build.sagemaker.ListModelPackages",
        lambda params, **_: named.append(params["ModelPackageGroupName"]),
    )
    reader = SageMakerRegistry(
        sagemaker,
        boto3.client("s3", region_name="eu-west-1"),
        bucket="registry",
        image_uri="",
        owner=REGISTRY_ACCOUNT,
        models=["fraud", "churn"],
    )
    assert reader.models() == ["churn", "fraud"]  # configured, not listed
    (version,) = reader.versions("fraud")
    assert (version.model, version.version) == ("fraud", "1")
    assert reader.get("fraud", "1").arn == version.arn
    assert set(named) == {f"arn:aws:sagemaker:eu-west-1:{REGISTRY_ACCOUNT}:model-package-group/fraud"}
