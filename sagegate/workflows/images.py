"""The stack's container images, built by CodeBuild during `cdk deploy` (infra/constructs/images.py):
the steps of the custom resource that stands for one image, in the provider framework's two calls.

The resource's properties name the image (repository, tag = the hash of its source) and the build
project. CloudFormation calls it only when a property changes, so an unchanged source starts
nothing; a changed one is a new tag, and a new physical id.

- `on_event`, Create or Update: a tag already in the repository is the answer (a stack rolled back
  to an earlier source, or an image built before); otherwise a build of it starts.
- `on_event`, Delete: nothing. The image stays: a rollback may need it, and the repository's
  lifecycle rule expires old images.
- `is_complete`: the build's status. A failed build fails the deploy, with the build's status, the
  phase that failed and the link to its log.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ImageBuildFailed", "image_uri", "is_complete", "on_event"]


class ImageBuildFailed(Exception):
    pass


def image_uri(properties: dict[str, Any]) -> str:
    return f"{properties['RepositoryUri']}:{properties['Tag']}"


def on_event(event: dict[str, Any], *, codebuild: Any, ecr: Any) -> dict[str, Any]:
    if event["RequestType"] == "Delete":
        return {"PhysicalResourceId": event["PhysicalResourceId"]}
    properties = event["ResourceProperties"]
    uri = image_uri(properties)
    answer: dict[str, Any] = {"PhysicalResourceId": uri, "Data": {"ImageUri": uri}}
    if _pushed(ecr, properties["RepositoryName"], properties["Tag"]):
        return answer
    build = codebuild.start_build(
        projectName=properties["ProjectName"],
        environmentVariablesOverride=[
            {"name": name, "value": value, "type": "PLAINTEXT"}
            for name, value in {
                "SOURCE_BUCKET": properties["SourceBucket"],
                "SOURCE_KEY": properties["SourceKey"],
                "DOCKERFILE": properties["Dockerfile"],
                "BUILD_ARGS": " ".join(
                    f"--build-arg {k}={v}" for k, v in sorted(properties.get("BuildArgs", {}).items())
                ),
                "IMAGE_URI": uri,
            }.items()
        ],
    )["build"]
    return {**answer, "BuildId": build["id"]}


def is_complete(event: dict[str, Any], *, codebuild: Any) -> dict[str, Any]:
    build_id = event.get("BuildId")
    if event["RequestType"] == "Delete" or not build_id:
        return {"IsComplete": True}
    (build,) = codebuild.batch_get_builds(ids=[build_id])["builds"]
    status = build["buildStatus"]
    if status == "IN_PROGRESS":
        return {"IsComplete": False}
    if status == "SUCCEEDED":
        return {"IsComplete": True}
    failed = [p["phaseType"] for p in build.get("phases", []) if p.get("phaseStatus") not in (None, "SUCCEEDED")]
    where = f" in {failed[0]}" if failed else ""
    link = build.get("logs", {}).get("deepLink") or "no log link (the build did not start)"
    raise ImageBuildFailed(f"image build {build_id} {status}{where} ({image_uri(event['ResourceProperties'])}): {link}")


def _pushed(ecr: Any, repository: str, tag: str) -> bool:
    try:
        ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])
    except ecr.exceptions.ImageNotFoundException:
        return False
    return True
