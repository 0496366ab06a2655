"""`--target aws` finds its inference image where the environment's stack published it (SSM), unless
SAGEGATE_AWS_IMAGE_URI names one; SSM, SageMaker and S3 are moto's.

What moto cannot prove: IAM (the caller needs ssm:GetParameter on /sagegate/<env>/images/*), and that
the parameter holds what the stack wrote: tests/infra/test_images.py checks the template's
parameter names and values against `image_parameter`."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from sagegate.cli import app
from sagegate.packaging import BuiltPackage
from sagegate.registry import RegistryError
from sagegate.registry.sagemaker import SageMakerRegistry
from sagegate.targets import Target, image_parameter, open_registry, resolve_target

REGION = "eu-west-1"
IMAGES = {
    "inference": "111111111111.dkr.ecr.eu-west-1.amazonaws.com/sagegate-dev-inference:" + "a" * 64,
    "inference-gpu": "111111111111.dkr.ecr.eu-west-1.amazonaws.com/sagegate-dev-inference-gpu:" + "b" * 64,
}


@pytest.fixture
def account() -> Iterator[None]:
    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket="sagegate-dev-models", CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        ssm = boto3.client("ssm", region_name=REGION)
        for image, uri in IMAGES.items():
            ssm.put_parameter(Name=image_parameter("dev", image), Value=uri, Type="String")
        yield


def _target(**fields: str) -> Target:
    return Target(name="aws", kind="aws", region=REGION, bucket="sagegate-dev-models", **fields)


@pytest.mark.parametrize(("gpu", "image"), [(False, "inference"), (True, "inference-gpu")])
def test_the_environments_published_image_is_used(account: None, gpu: bool, image: str) -> None:
    registry = open_registry(_target(environment="dev"), gpu=gpu)
    assert isinstance(registry, SageMakerRegistry) and registry.image_uri == IMAGES[image]


def test_an_image_uri_that_is_set_wins(account: None) -> None:
    registry = open_registry(_target(environment="dev", image_uri="1.dkr.ecr/own:1"), gpu=True)
    assert isinstance(registry, SageMakerRegistry) and registry.image_uri == "1.dkr.ecr/own:1"


def test_an_environment_not_deployed_is_named_with_the_way_out(account: None) -> None:
    with pytest.raises(RegistryError, match=r"no image published at /sagegate/qa/images/inference: deploy .*'qa'"):
        open_registry(_target(environment="qa"))
    with pytest.raises(RegistryError, match=r"needs image_uri or environment"):
        open_registry(_target())


def test_the_environment_comes_from_sagegate_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGEGATE_AWS_ENVIRONMENT", "dev")
    monkeypatch.setenv("SAGEGATE_AWS_BUCKET", "sagegate-dev-models")
    assert resolve_target("aws").environment == "dev"


def test_register_gpu_registers_the_package_with_the_gpu_image(
    account: None, fraud_logreg: BuiltPackage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGEGATE_AWS_ENVIRONMENT", "dev")
    monkeypatch.setenv("SAGEGATE_AWS_BUCKET", "sagegate-dev-models")
    result = CliRunner().invoke(app, ["register", str(fraud_logreg.path), "--target", "aws", "--gpu"])
    assert result.exit_code == 0, result.output
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    (summary,) = sagemaker.list_model_packages(ModelPackageGroupName="fraud")["ModelPackageSummaryList"]
    described = sagemaker.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
    assert described["InferenceSpecification"]["Containers"][0]["Image"] == IMAGES["inference-gpu"]
