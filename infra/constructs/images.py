"""The environment's container images, built in AWS during `cdk deploy`, so that neither synth nor
deploy needs Docker here. Per image: an ECR repository (scan on push, immutable tags, the last
images kept); its build context, an S3 asset of exactly what its Dockerfile copies, whose hash is
the image's tag; and a custom resource (sagegate.workflows.images) that has one CodeBuild project
build and push `<repository>:<hash>` when that hash is new. An unchanged source changes no property,
so CloudFormation calls nothing and nothing is built."""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aws_cdk import CfnOutput, CustomResource, Duration, FileSystem, IgnoreMode, RemovalPolicy, Stack, custom_resources
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from infra.constructs.providers import handler_pair, waiting_provider
from infra.nag import acknowledge, policy_holder, wildcard_resource
from sagegate.targets import image_parameter

ROOT = Path(__file__).resolve().parents[2]
KEPT_IMAGES = 10  # per repository: enough for the rollbacks a stack can make
CUDA_BASE = "nvcr.io/nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04"
PUSH_ACTIONS = [
    "ecr:BatchCheckLayerAvailability",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:PutImage",
    "ecr:BatchGetImage",
]  # what ECR's guide lists for a push to one repository, and what `docker push` calls
PULL_ACTIONS = ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"]

# The build: the context from its asset, then docker build and push. Part of every image's hash, so
# a change to how images are built rebuilds them.
BUILD_SPEC = {
    "version": "0.2",
    "env": {"shell": "bash"},
    "phases": {
        "build": {
            "commands": [
                'aws s3 cp "s3://$SOURCE_BUCKET/$SOURCE_KEY" /tmp/context.zip --only-show-errors',
                "mkdir -p /tmp/context && unzip -q /tmp/context.zip -d /tmp/context",
                'aws ecr get-login-password | docker login --username AWS --password-stdin "${IMAGE_URI%%/*}"',
                'docker build --pull -f "/tmp/context/$DOCKERFILE" $BUILD_ARGS -t "$IMAGE_URI" /tmp/context',
                'docker push "$IMAGE_URI"',
            ]
        }
    },
}


@dataclass(frozen=True)
class Image:
    """One image of this repository: its repository's suffix, its Dockerfile and build args."""

    name: str
    dockerfile: str
    build_args: Mapping[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return "".join(part.title() for part in self.name.split("-"))


INFERENCE = Image("inference", "containers/inference/Dockerfile")
INFERENCE_GPU = Image("inference-gpu", INFERENCE.dockerfile, {"BASE": CUDA_BASE, "ORT": "onnxruntime-gpu"})
BATCH = Image("batch", "containers/batch/Dockerfile")
MONITOR = Image("monitor", "containers/monitor/Dockerfile")  # a Lambda image: the monitoring workflow's logic


def context_of(root: Path, dockerfile: str) -> list[str]:
    """What the build reads: the Dockerfile and the sources of its COPY and ADD instructions."""
    text = (root / dockerfile).read_text().replace("\\\n", " ")
    sources = [dockerfile]
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if not words or words[0].upper() not in ("COPY", "ADD") or any(w.startswith("--from") for w in words):
            continue
        sources += [w.rstrip("/") for w in words[1:-1] if not w.startswith("--")]
    return sources


def source_hash(image: Image, root: Path = ROOT) -> str:
    """CDK's fingerprint of what the image's build reads and of how it is built (its asset's custom hash)."""
    exclude = _ignore_all_but(context_of(root, image.dockerfile))
    recipe = {"dockerfile": image.dockerfile, "build_args": dict(image.build_args), "build_spec": BUILD_SPEC}
    return FileSystem.fingerprint(
        str(root), exclude=exclude, ignore_mode=IgnoreMode.GIT, extra_hash=json.dumps(recipe, sort_keys=True)
    )


def image_tag(image: Image, root: Path = ROOT) -> str:
    """The image's tag, its asset's hash: CDK takes the sha256 of a custom hash. Known at synth time,
    so a stack of another account can name an image that the registry stack builds."""
    return hashlib.sha256(source_hash(image, root).encode()).hexdigest()


def publish(stack: Stack, environment: str, image: str, uri: str) -> None:
    """An image's URI as an output, and in SSM where `sagegate register --target aws` reads it."""
    cid = "".join(part.title() for part in image.split("-"))
    ssm.StringParameter(
        stack,
        f"{cid}ImageParameter",
        parameter_name=image_parameter(environment, image),
        string_value=uri,
        description=f"the {image} image built from this environment's source (tag: its hash)",
    )
    CfnOutput(stack, f"{cid}ImageUri", value=uri, description=f"the {image} image")


def grant_pull(grantee: iam.IGrantable, repository_arns: Sequence[str]) -> None:
    """Pulls from these repositories (a SageMaker execution role: endpoints, transform and spot jobs)."""
    iam.Grant.add_to_principal(grantee=grantee, actions=PULL_ACTIONS, resource_arns=list(repository_arns))
    iam.Grant.add_to_principal(grantee=grantee, actions=["ecr:GetAuthorizationToken"], resource_arns=["*"])
    acknowledge(policy_holder(grantee), wildcard_resource("*"), "ecr:GetAuthorizationToken has no resource scope")


def _ignore_all_but(sources: Sequence[str]) -> list[str]:
    """Git-style excludes that keep only `sources` (files or folders) and no bytecode."""
    patterns, opened = ["/*"], set()
    for source in sources:
        parts = source.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder not in opened:
                opened.add(folder)
                patterns += [f"!/{folder}/", f"/{folder}/*"]
        patterns.append(f"!/{source}")
    return [*patterns, "__pycache__/", "*.pyc"]


class Images(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        prefix: str,
        images: Sequence[Image],
        key: kms.IKey,
        code: lambda_.Code,
        log_retention: logs.RetentionDays,
        removal: RemovalPolicy,
        root: Path = ROOT,
    ) -> None:
        super().__init__(scope, id)
        self.repositories: dict[str, ecr.Repository] = {}
        self.sources: dict[str, s3_assets.Asset] = {}
        for image in images:
            self.repositories[image.name] = ecr.Repository(
                self,
                f"{image.id}Repository",
                repository_name=f"{prefix}-{image.name}",
                image_scan_on_push=True,
                image_tag_mutability=ecr.TagMutability.IMMUTABLE,
                encryption=ecr.RepositoryEncryption.KMS,
                encryption_key=key,
                lifecycle_rules=[ecr.LifecycleRule(max_image_count=KEPT_IMAGES, description="the latest images")],
                removal_policy=removal,
                empty_on_delete=removal == RemovalPolicy.DESTROY,
            )
            self.sources[image.name] = s3_assets.Asset(
                self,
                f"{image.id}Source",
                path=str(root),
                exclude=_ignore_all_but(context_of(root, image.dockerfile)),
                ignore_mode=IgnoreMode.GIT,
                # CDK's fingerprint of these files, and of how they are built (S3 assets take no extra hash)
                asset_hash=source_hash(image, root),
            )
        self.project = self._project(prefix, key, log_retention, removal)
        provider = self._provider(prefix, code, log_retention, removal)
        self.builds: dict[str, CustomResource] = {}
        self.uris: dict[str, str] = {}
        for image in images:
            repository, source = self.repositories[image.name], self.sources[image.name]
            build = CustomResource(
                self,
                f"{image.id}Image",
                service_token=provider.service_token,
                resource_type="Custom::SagegateImage",
                properties={
                    "ProjectName": self.project.project_name,
                    "RepositoryName": repository.repository_name,
                    "RepositoryUri": repository.repository_uri,
                    "Tag": source.asset_hash,
                    "SourceBucket": source.s3_bucket_name,
                    "SourceKey": source.s3_object_key,
                    "Dockerfile": image.dockerfile,
                    "BuildArgs": dict(image.build_args),
                },
            )
            self.builds[image.name] = build
            self.uris[image.name] = build.get_att_string("ImageUri")  # so users depend on the build

    def grant_pull(self, grantee: iam.IGrantable) -> None:
        """Pulls from these repositories (a SageMaker execution role: endpoints, transform and spot jobs)."""
        grant_pull(grantee, [r.repository_arn for r in self.repositories.values()])

    def _project(
        self, prefix: str, key: kms.IKey, log_retention: logs.RetentionDays, removal: RemovalPolicy
    ) -> codebuild.Project:
        log_group = logs.LogGroup(self, "BuildLogs", retention=log_retention, removal_policy=removal)
        role = iam.Role(
            self,
            "BuildRole",
            assumed_by=iam.ServicePrincipal("codebuild.amazonaws.com"),
            description=f"{prefix}: builds the container images: reads their sources, pushes to their repositories",
        )
        statements = [
            (["logs:CreateLogStream", "logs:PutLogEvents"], [log_group.log_group_arn]),
            (["s3:GetObject"], [s.bucket.arn_for_objects(s.s3_object_key) for s in self.sources.values()]),
            (PUSH_ACTIONS, [r.repository_arn for r in self.repositories.values()]),
            (["ecr:GetAuthorizationToken"], ["*"]),
            # The project's key: CodeBuild encrypts what a build stores with it (CodeBuild's guide for a
            # customer managed key). These builds store nothing beyond their logs and the pushed image.
            (["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"], [key.key_arn]),
        ]
        for actions, resources in statements:
            role.add_to_policy(iam.PolicyStatement(actions=actions, resources=resources))
        acknowledge(role, wildcard_resource("*"), "ecr:GetAuthorizationToken has no resource scope")
        project = codebuild.Project(
            self,
            "Build",
            project_name=f"{prefix}-images",
            description="docker build and push of one image of this stack (started by the stack's image resources)",
            build_spec=codebuild.BuildSpec.from_object(BUILD_SPEC),
            environment=codebuild.BuildEnvironment(
                build_image=codebuild.LinuxBuildImage.STANDARD_7_0,
                compute_type=codebuild.ComputeType.MEDIUM,
                privileged=True,
            ),
            encryption_key=key,
            role=role.without_policy_updates(),  # exactly the statements above: no grants added by CDK
            logging=codebuild.LoggingOptions(cloud_watch=codebuild.CloudWatchLoggingOptions(log_group=log_group)),
            timeout=Duration.minutes(45),
            queued_timeout=Duration.minutes(30),
        )
        project.node.add_dependency(role)  # with its policy: a build started at once can read and push
        acknowledge(project, "CB3", "docker build runs the Docker daemon in the build, which needs privileged mode")
        return project

    def _provider(
        self, prefix: str, code: lambda_.Code, log_retention: logs.RetentionDays, removal: RemovalPolicy
    ) -> custom_resources.Provider:
        """Our two handlers behind CDK's provider framework (infra.constructs.providers), whose waiter
        calls is_complete every 30 s for up to an hour (a build times out in 45 minutes)."""
        repositories = [r.repository_arn for r in self.repositories.values()]
        on_event, is_complete = handler_pair(
            self,
            "Image",
            module="images_handler",
            code=code,
            timeout=Duration.minutes(1),
            log_retention=log_retention,
            removal=removal,
        )
        for function, statements in (
            (
                on_event,
                [(["ecr:DescribeImages"], repositories), (["codebuild:StartBuild"], [self.project.project_arn])],
            ),
            (is_complete, [(["codebuild:BatchGetBuilds"], [self.project.project_arn])]),
        ):
            for actions, resources in statements:
                function.add_to_role_policy(iam.PolicyStatement(actions=actions, resources=resources))
        return waiting_provider(
            self,
            "Provider",
            prefix=prefix,
            what="the image builds",
            on_event=on_event,
            is_complete=is_complete,
            total_timeout=Duration.hours(1),
            log_retention=log_retention,
            removal=removal,
        )
