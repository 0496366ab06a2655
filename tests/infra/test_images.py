"""The container images built by CodeBuild during `cdk deploy` (infra/constructs/images.py): the
construct in a bare stack (over a copy of the repository's context where the source changes), then
the environments' stacks, with the roles' policies held to the calls the build and the handlers make.

What this cannot prove here (no AWS account, no Docker): that CodeBuild builds and pushes the images
(the buildspec runs in AWS only), what CodeBuild itself does with the project's role (write the
build's log, use the project's key: asserted as statements, not derived from calls), and the order
in which CloudFormation calls the custom resource."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.stub import Stubber

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk.assertions import Template

from infra.config import CONTEXT_KEY, EnvConfig, VariantConfig, load_environments
from infra.constructs.images import BATCH, INFERENCE, INFERENCE_GPU, KEPT_IMAGES, Image, Images, context_of
from sagegate.targets import image_parameter
from sagegate.workflows import images as steps
from tests.aws_rules.iam import Call, evaluate, requests_for
from tests.aws_rules.template import Deployed, synthesized

ROOT = Path(__file__).resolve().parents[2]
CONTEXT = json.loads((ROOT / "cdk.json").read_text())["context"]
ACCOUNT, REGION = "111111111111", "eu-west-1"


def _images(
    root: Path = ROOT,
    images: Sequence[Image] = (INFERENCE, BATCH),
    removal: cdk.RemovalPolicy = cdk.RemovalPolicy.DESTROY,
    outdir: Path | None = None,
) -> tuple[cdk.Stack, Images]:
    app = cdk.App(outdir=str(outdir) if outdir else None)
    stack = cdk.Stack(app, "Bare", env=cdk.Environment(account=ACCOUNT, region=REGION))
    built = Images(
        stack,
        "Images",
        prefix="sagegate-dev",
        images=list(images),
        key=kms.Key(stack, "Key"),
        code=lambda_.Code.from_inline("def on_event(event, context): pass"),
        log_retention=logs.RetentionDays.ONE_WEEK,
        removal=removal,
        root=root,
    )
    return stack, built


def _tags(root: Path) -> dict[str, str]:
    """Each image's tag as the template gives it to its custom resource, which must be its asset's hash."""
    stack, built = _images(root, (INFERENCE, INFERENCE_GPU, BATCH))
    resources = Template.from_stack(stack).find_resources("Custom::SagegateImage")
    tags = {}
    for name, build in built.builds.items():
        tag = resources[stack.get_logical_id(build.node.default_child)]["Properties"]["Tag"]  # type: ignore[arg-type]
        assert tag == built.sources[name].asset_hash
        tags[name] = tag
    return tags


def _context_copy(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    for item in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / item, root / item)
    for folder in ("sagegate", "containers"):
        shutil.copytree(ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _append(path: Path, text: str = "\n# changed\n") -> None:
    with path.open("a") as f:
        f.write(text)


# -- the construct ------------------------------------------------------------------------------


def test_each_image_has_a_repository_scanned_on_push_with_immutable_tags_and_expiry() -> None:
    stack, _ = _images()
    template = Template.from_stack(stack)
    repositories = template.find_resources("AWS::ECR::Repository")
    assert {r["Properties"]["RepositoryName"] for r in repositories.values()} == {
        "sagegate-dev-inference",
        "sagegate-dev-batch",
    }
    key = next(iter(template.find_resources("AWS::KMS::Key")))
    for repository in repositories.values():
        props = repository["Properties"]
        assert props["ImageScanningConfiguration"] == {"ScanOnPush": True}
        assert props["ImageTagMutability"] == "IMMUTABLE"
        assert props["EncryptionConfiguration"] == {"EncryptionType": "KMS", "KmsKey": {"Fn::GetAtt": [key, "Arn"]}}
        (rule,) = json.loads(props["LifecyclePolicy"]["LifecyclePolicyText"])["rules"]
        assert rule["selection"] == {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": KEPT_IMAGES}
        assert rule["action"] == {"type": "expire"}
        assert (repository["DeletionPolicy"], props["EmptyOnDelete"]) == ("Delete", True)
    retained, _ = _images(removal=cdk.RemovalPolicy.RETAIN)
    for repository in Template.from_stack(retained).find_resources("AWS::ECR::Repository").values():
        assert repository["DeletionPolicy"] == "Retain" and not repository["Properties"].get("EmptyOnDelete")


def test_the_build_project_is_privileged_encrypted_and_runs_docker_build_and_push() -> None:
    stack, built = _images()
    template = Template.from_stack(stack)
    (project,) = template.find_resources("AWS::CodeBuild::Project").values()
    props = project["Properties"]
    key = next(iter(template.find_resources("AWS::KMS::Key")))
    assert props["Environment"]["PrivilegedMode"] is True
    assert props["EncryptionKey"] == {"Fn::GetAtt": [key, "Arn"]}
    assert props["Source"]["Type"] == "NO_SOURCE"  # the context comes from its asset, by the build's own s3 cp
    commands = json.loads(props["Source"]["BuildSpec"])["phases"]["build"]["commands"]
    assert any(c.startswith("docker build") for c in commands) and commands[-1] == 'docker push "$IMAGE_URI"'
    assert props["LogsConfig"]["CloudWatchLogs"]["Status"] == "ENABLED"
    role = props["ServiceRole"]["Fn::GetAtt"][0]
    ((policy_id, policy),) = [
        (logical, p["Properties"]["PolicyDocument"]["Statement"])
        for logical, p in template.find_resources("AWS::IAM::Policy").items()
        if p["Properties"]["Roles"] == [{"Ref": role}]
    ]
    # The image resources name the project: no build starts before the role's policy exists.
    assert policy_id in project["DependsOn"]
    by_action = {
        a: s["Resource"] for s in policy for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    sources = [stack.resolve(s.bucket.arn_for_objects(s.s3_object_key)) for s in built.sources.values()]
    repositories = [stack.resolve(r.repository_arn) for r in built.repositories.values()]
    assert by_action["s3:GetObject"] == sources  # the sources' objects, not the assets bucket
    assert by_action["ecr:PutImage"] == repositories
    assert by_action["ecr:GetAuthorizationToken"] == "*"


def test_an_images_tag_is_the_hash_of_its_source_and_nothing_else(tmp_path: Path) -> None:
    root = _context_copy(tmp_path)
    first = _tags(root)
    assert _tags(root) == first  # synthesized again from the same source: the same tags, no build
    assert len(set(first.values())) == 3  # the GPU image: the same files, other build args
    (root / "tests").mkdir()
    (root / "tests" / "test_new.py").write_text("def test(): pass\n")  # outside every context
    (root / "sagegate" / "__pycache__").mkdir()
    (root / "sagegate" / "__pycache__" / "keys.cpython-312.pyc").write_bytes(b"\0")
    assert _tags(root) == first
    _append(root / "containers" / "batch" / "train")
    batch_changed = _tags(root)
    assert batch_changed["batch"] != first["batch"]
    assert {k: v for k, v in batch_changed.items() if k != "batch"} == {k: v for k, v in first.items() if k != "batch"}
    _append(root / "sagegate" / "keys.py")
    package_changed = _tags(root)
    assert all(package_changed[name] != batch_changed[name] for name in first)


def test_the_build_context_holds_what_the_dockerfile_copies_and_no_more(tmp_path: Path) -> None:
    assert context_of(ROOT, INFERENCE.dockerfile) == [
        "containers/inference/Dockerfile",
        "pyproject.toml",
        "README.md",
        "sagegate",
        "containers/inference/serve",
    ]
    root = _context_copy(tmp_path)
    (root / "sagegate" / "__pycache__").mkdir()
    (root / "sagegate" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (root / ".venv").mkdir()
    (root / ".venv" / "pyvenv.cfg").write_text("home = /usr\n")
    outdir = tmp_path / "cdk.out"
    _, built = _images(root, (INFERENCE,), outdir=outdir)
    staged = outdir / built.sources["inference"].asset_path
    files = {str(p.relative_to(staged)) for p in staged.rglob("*") if p.is_file()}
    package = {
        str(p.relative_to(root)) for p in (root / "sagegate").rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }
    assert (
        files
        == {"pyproject.toml", "README.md", "containers/inference/Dockerfile", "containers/inference/serve"} | package
    )


def test_an_environment_builds_the_gpu_image_for_a_gpu_variant_or_when_asked() -> None:
    arn = "arn:aws:sagemaker:eu-west-1:111111111111:model-package/m/1"
    on = {
        t: VariantConfig(name="v", model_package_arn=arn, instance_type=t).on_gpu
        for t in ("ml.g5.xlarge", "ml.p4d.24xlarge", "ml.c6i.large", "ml.inf2.xlarge")
    }
    assert on == {"ml.g5.xlarge": True, "ml.p4d.24xlarge": True, "ml.c6i.large": False, "ml.inf2.xlarge": False}
    assert VariantConfig(name="v", model_package_arn=arn, instance_type="ml.m5.large", gpus=1).on_gpu
    # Before any variant: the GPU image only when asked, so that GPU packages can be registered first.
    bare = {"name": "new", "account": ACCOUNT, "region": REGION}
    assert not EnvConfig.model_validate(bare).on_gpu
    assert EnvConfig.model_validate({**bare, "gpu_image": True}).on_gpu


# -- the environments' stacks ----------------------------------------------------------------------


def _image_resources(deployed: Deployed) -> dict[str, str]:
    """Image name -> logical id of its custom resource."""
    prefix = f"sagegate-{deployed.env}-"
    return {
        deployed.properties(logical)["RepositoryName"].removeprefix(prefix): logical
        for logical in deployed.of_type("Custom::SagegateImage")
    }


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_the_gpu_image_is_built_only_where_a_variant_serves_on_a_gpu(env: str) -> None:
    deployed = synthesized(env)
    config = load_environments(CONTEXT[CONTEXT_KEY])[env]
    expected = {"inference", "batch", "monitor"} | ({"inference-gpu"} if config.on_gpu else set())
    assert set(_image_resources(deployed)) == expected
    assert {deployed.properties(r)["RepositoryName"] for r in deployed.of_type("AWS::ECR::Repository")} == {
        f"sagegate-{env}-{name}" for name in expected
    }
    assert (env == "prod") == config.on_gpu  # prod's images model is on ml.g5.xlarge; the others are CPU only
    # Synth stays Docker-free: the stack has no Docker image asset, only file assets.
    manifest = json.loads((deployed.outdir / f"{deployed.stack}.assets.json").read_text())
    assert manifest["dockerImages"] == {}


def test_batch_jobs_the_parameters_and_the_execution_role_use_the_built_images() -> None:
    deployed = synthesized("prod")
    built = _image_resources(deployed)
    uri = {name: {"Fn::GetAtt": [logical, "ImageUri"]} for name, logical in built.items()}
    machine = deployed.logical_id("AWS::StepFunctions::StateMachine", StateMachineName="sagegate-prod-batch-inference")
    substitutions = deployed.resources[machine]["Properties"]["DefinitionSubstitutions"]
    assert substitutions["BatchImageUri"] == uri["batch"]
    parameters = {
        r["Properties"]["Name"]: r["Properties"]["Value"] for r in deployed.of_type("AWS::SSM::Parameter").values()
    }
    served = [name for name in built if name != "monitor"]  # the monitor image is the monitor Lambda's alone
    assert parameters == {image_parameter("prod", name): uri[name] for name in served}
    outputs = [o["Value"] for o in deployed.template["Outputs"].values()]
    assert all(uri[name] in outputs for name in served)
    # The SageMaker execution role pulls from exactly these repositories.
    role = next(r for r in deployed.of_type("AWS::IAM::Role") if "ExecutionRole" in r and r.startswith("Serving"))
    pulls = [s for s in deployed.role_statements(role) if "ecr:BatchGetImage" in s["Action"]]
    repositories = sorted(
        deployed.get_att(r, "Arn")
        for r in deployed.of_type("AWS::ECR::Repository")
        if deployed.properties(r)["RepositoryName"] != "sagegate-prod-monitor"
    )
    assert [sorted(s["Resource"]) for s in pulls] == [repositories]
    # The property that changes with the source is the asset's object: the tag names it.
    for logical in built.values():
        props = deployed.properties(logical)
        assert props["SourceKey"] == f"{props['Tag']}.zip"


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    return {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}


def _denied(deployed: Deployed, role: str, calls: list[Call]) -> list[str]:
    statements = deployed.role_statements(role)
    return [
        f"{call}: {request}"
        for call in calls
        for request in requests_for(call, account=deployed.account, region=deployed.region)
        if evaluate(request, statements) != "allowed"
    ]


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_the_build_role_allows_exactly_what_the_build_calls(env: str) -> None:
    deployed = synthesized(env)
    project = deployed.logical_id("AWS::CodeBuild::Project", Name=f"sagegate-{env}-images")
    role = deployed.resources[project]["Properties"]["ServiceRole"]["Fn::GetAtt"][0]
    calls = []
    for logical in _image_resources(deployed).values():
        props = deployed.properties(logical)
        source = {"Bucket": props["SourceBucket"], "Key": props["SourceKey"]}
        repository = {"repositoryName": props["RepositoryName"]}
        calls += [
            # `aws s3 cp` of the context, `aws ecr get-login-password`, then `docker push`: the ECR
            # actions that its guide lists for a push, each a call of ECR's API (botocore's model).
            Call(role, "s3", "HeadObject", source),
            Call(role, "s3", "GetObject", source),
            Call(role, "ecr", "GetAuthorizationToken", {}),
            *(
                Call(role, "ecr", operation, repository)
                for operation in (
                    "BatchCheckLayerAvailability",
                    "InitiateLayerUpload",
                    "UploadLayerPart",
                    "CompleteLayerUpload",
                    "PutImage",
                    "BatchGetImage",
                )
            ),
        ]
    ecr = botocore.session.get_session().get_service_model("ecr")
    assert all(c.operation in ecr.operation_names for c in calls if c.service == "ecr")
    assert not _denied(deployed, role, calls)
    requested = {r.action for c in calls for r in requests_for(c, account=deployed.account, region=deployed.region)}
    statements = deployed.role_statements(role)
    # Beyond the build's calls: CodeBuild writes the build's log and uses the project's key, as this role.
    codebuild_itself = {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "kms:Encrypt",
        "kms:Decrypt",
        "kms:GenerateDataKey",
    }
    assert _actions(statements) == requested | codebuild_itself
    for statement in statements:
        if "s3:GetObject" in _actions([statement]):
            assert sorted(statement["Resource"]) == sorted(
                f"arn:aws:s3:::{c.params['Bucket']}/{c.params['Key']}" for c in calls if c.operation == "GetObject"
            )


def _recorded(event: dict[str, Any], build_id: str) -> dict[str, list[Call]]:
    """The calls each handler makes for a new image: on_event, then is_complete until it succeeds,
    recorded from botocore (operation and parameters as sent) with answers stubbed."""
    session = botocore.session.get_session()
    clients = {name: session.create_client(name, region_name=REGION) for name in ("codebuild", "ecr")}
    made: list[tuple[str, str, dict[str, Any]]] = []
    for name, client in clients.items():
        client.meta.events.register(
            "provide-client-params",
            lambda params, model, _name=name, **_: made.append((_name, model.name, dict(params))),
        )
    calls: dict[str, list[Call]] = {}
    with Stubber(clients["codebuild"]) as codebuild, Stubber(clients["ecr"]) as ecr:
        ecr.add_client_error("describe_images", service_error_code="ImageNotFoundException")
        codebuild.add_response("start_build", {"build": {"id": build_id}})
        codebuild.add_response("batch_get_builds", {"builds": [{"id": build_id, "buildStatus": "SUCCEEDED"}]})
        answer = steps.on_event(event, codebuild=clients["codebuild"], ecr=clients["ecr"])
        calls["on_event"] = [Call("on_event", *m) for m in made]
        made.clear()
        assert steps.is_complete({**event, **answer}, codebuild=clients["codebuild"]) == {"IsComplete": True}
        # IAM authorizes BatchGetBuilds on the builds' project; a build id is <project>:<uuid>.
        calls["is_complete"] = [
            Call("is_complete", s, o, {**p, "projectName": build_id.split(":", maxsplit=1)[0]}) for s, o, p in made
        ]
    return calls


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_the_handlers_roles_allow_exactly_the_calls_they_make(env: str) -> None:
    deployed = synthesized(env)
    for logical in _image_resources(deployed).values():
        props = deployed.properties(logical)
        event = {"RequestType": "Create", "ResourceProperties": props, "RequestId": "r", "LogicalResourceId": logical}
        calls = _recorded(event, f"{props['ProjectName']}:0f0e0d0c-0b0a-0908-0706-050403020100")
        assert [c.operation for c in calls["on_event"]] == ["DescribeImages", "StartBuild"]
        for step, made in calls.items():
            role = deployed.role_of("AWS::Lambda::Function", Handler=f"images_handler.{step}")
            assert not _denied(deployed, role, made), step
            requested = {
                r.action for c in made for r in requests_for(c, account=deployed.account, region=deployed.region)
            }
            granted = _actions(deployed.role_statements(role)) - {"logs:CreateLogStream", "logs:PutLogEvents"}
            assert granted == requested, step
