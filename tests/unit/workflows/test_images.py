"""The image build custom resource's steps (sagegate.workflows.images) against botocore's CodeBuild
and ECR clients with Stubber: each request is checked against the services' models, and the
answers are shaped as the models say.

What the stubs cannot prove: that CodeBuild accepts the build (the project exists, the overrides are
allowed, the role may push), that the build itself works (docker build and push run in AWS only),
or how CloudFormation and CDK's provider framework sequence the calls; the stack's tests check the
roles, and the provider's merging of on_event's answer into is_complete's event is CDK's
(custom-resources/lib/provider-framework/runtime/framework.js)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import botocore.session
import pytest
from botocore.stub import Stubber

from sagegate.workflows.images import ImageBuildFailed, is_complete, on_event

REPOSITORY_URI = "111111111111.dkr.ecr.eu-west-1.amazonaws.com/sagegate-dev-inference-gpu"
TAG = "ab" * 32
PROPERTIES = {
    "ServiceToken": "arn:aws:lambda:eu-west-1:111111111111:function:provider",
    "ProjectName": "sagegate-dev-images",
    "RepositoryName": "sagegate-dev-inference-gpu",
    "RepositoryUri": REPOSITORY_URI,
    "Tag": TAG,
    "SourceBucket": "cdk-hnb659fds-assets-111111111111-eu-west-1",
    "SourceKey": f"{TAG}.zip",
    "Dockerfile": "containers/inference/Dockerfile",
    "BuildArgs": {"ORT": "onnxruntime-gpu", "BASE": "nvcr.io/nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04"},
}
BUILD_ID = "sagegate-dev-images:0f0e0d0c-0b0a-0908-0706-050403020100"


@pytest.fixture
def clients() -> Iterator[tuple[Any, Any, Stubber, Stubber]]:
    session = botocore.session.get_session()
    codebuild = session.create_client("codebuild", region_name="eu-west-1")
    ecr = session.create_client("ecr", region_name="eu-west-1")
    with Stubber(codebuild) as built, Stubber(ecr) as pushed:
        yield codebuild, ecr, built, pushed
        built.assert_no_pending_responses()
        pushed.assert_no_pending_responses()


def _event(request: str, **extra: Any) -> dict[str, Any]:
    return {"RequestType": request, "ResourceProperties": PROPERTIES, "PhysicalResourceId": "old:tag", **extra}


def _no_image(pushed: Stubber) -> None:
    pushed.add_client_error(
        "describe_images",
        service_error_code="ImageNotFoundException",
        expected_params={"repositoryName": PROPERTIES["RepositoryName"], "imageIds": [{"imageTag": TAG}]},
    )


@pytest.mark.parametrize("request_type", ["Create", "Update"])
def test_a_new_source_hash_starts_one_build_of_that_tag(
    clients: tuple[Any, Any, Stubber, Stubber], request_type: str
) -> None:
    codebuild, ecr, built, pushed = clients
    _no_image(pushed)
    built.add_response(
        "start_build",
        {"build": {"id": BUILD_ID}},
        expected_params={
            "projectName": "sagegate-dev-images",
            "environmentVariablesOverride": [
                {"name": "SOURCE_BUCKET", "value": PROPERTIES["SourceBucket"], "type": "PLAINTEXT"},
                {"name": "SOURCE_KEY", "value": f"{TAG}.zip", "type": "PLAINTEXT"},
                {"name": "DOCKERFILE", "value": "containers/inference/Dockerfile", "type": "PLAINTEXT"},
                {
                    "name": "BUILD_ARGS",
                    "value": "--build-arg BASE=nvcr.io/nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04"
                    " --build-arg ORT=onnxruntime-gpu",
                    "type": "PLAINTEXT",
                },
                {"name": "IMAGE_URI", "value": f"{REPOSITORY_URI}:{TAG}", "type": "PLAINTEXT"},
            ],
        },
    )
    answer = on_event(_event(request_type), codebuild=codebuild, ecr=ecr)
    # The image is its own physical resource: a new tag replaces it, and the old one is then deleted.
    assert answer == {
        "PhysicalResourceId": f"{REPOSITORY_URI}:{TAG}",
        "Data": {"ImageUri": f"{REPOSITORY_URI}:{TAG}"},
        "BuildId": BUILD_ID,
    }


def test_a_tag_already_pushed_builds_nothing(clients: tuple[Any, Any, Stubber, Stubber]) -> None:
    codebuild, ecr, _, pushed = clients
    # A rollback to the source of an earlier deploy: its image is in the repository (tags are immutable).
    pushed.add_response(
        "describe_images",
        {"imageDetails": [{"imageTags": [TAG], "imageDigest": "sha256:" + "0" * 64}]},
        expected_params={"repositoryName": PROPERTIES["RepositoryName"], "imageIds": [{"imageTag": TAG}]},
    )
    answer = on_event(_event("Update"), codebuild=codebuild, ecr=ecr)
    assert "BuildId" not in answer and answer["Data"] == {"ImageUri": f"{REPOSITORY_URI}:{TAG}"}
    assert is_complete({**_event("Update"), **answer}, codebuild=codebuild) == {"IsComplete": True}


def test_delete_keeps_the_image_and_calls_nothing(clients: tuple[Any, Any, Stubber, Stubber]) -> None:
    codebuild, ecr, _, _ = clients
    assert on_event(_event("Delete"), codebuild=codebuild, ecr=ecr) == {"PhysicalResourceId": "old:tag"}
    assert is_complete(_event("Delete"), codebuild=codebuild) == {"IsComplete": True}


def test_the_build_is_followed_until_it_succeeds(clients: tuple[Any, Any, Stubber, Stubber]) -> None:
    codebuild, _, built, _ = clients
    for status in ("IN_PROGRESS", "SUCCEEDED"):
        built.add_response(
            "batch_get_builds", {"builds": [{"id": BUILD_ID, "buildStatus": status}]}, {"ids": [BUILD_ID]}
        )
    event = _event("Create", BuildId=BUILD_ID)
    assert is_complete(event, codebuild=codebuild) == {"IsComplete": False}  # no Data: the framework refuses it
    assert is_complete(event, codebuild=codebuild) == {"IsComplete": True}


@pytest.mark.parametrize("status", ["FAILED", "FAULT", "STOPPED", "TIMED_OUT"])
def test_a_failed_build_fails_the_deploy_with_its_phase_and_log_link(
    clients: tuple[Any, Any, Stubber, Stubber], status: str
) -> None:
    codebuild, _, built, _ = clients
    link = "https://console.aws.amazon.com/cloudwatch/home?region=eu-west-1#logEvent:group=g;stream=s"
    built.add_response(
        "batch_get_builds",
        {
            "builds": [
                {
                    "id": BUILD_ID,
                    "buildStatus": status,
                    "phases": [
                        {"phaseType": "DOWNLOAD_SOURCE", "phaseStatus": "SUCCEEDED"},
                        {"phaseType": "BUILD", "phaseStatus": status},
                        {"phaseType": "FINALIZING"},
                    ],
                    "logs": {"deepLink": link},
                }
            ]
        },
        {"ids": [BUILD_ID]},
    )
    with pytest.raises(ImageBuildFailed) as failed:
        is_complete(_event("Create", BuildId=BUILD_ID), codebuild=codebuild)
    assert str(failed.value) == f"image build {BUILD_ID} {status} in BUILD ({REPOSITORY_URI}:{TAG}): {link}"


def test_a_build_that_never_ran_says_so(clients: tuple[Any, Any, Stubber, Stubber]) -> None:
    codebuild, _, built, _ = clients
    built.add_response("batch_get_builds", {"builds": [{"id": BUILD_ID, "buildStatus": "FAULT"}]})
    with pytest.raises(ImageBuildFailed, match=r"FAULT \(.*\): no log link \(the build did not start\)"):
        is_complete(_event("Create", BuildId=BUILD_ID), codebuild=codebuild)
