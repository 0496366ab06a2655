"""Both registry backends, held to the same behaviour: the local one on SQLite, SageMaker's under moto.

What moto cannot prove: SageMaker's own limits and IAM; moto implements the Model Registry calls
used here (groups, packages, versions, approval, customer metadata) and S3.
"""

from __future__ import annotations

import multiprocessing
import shutil
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from sagegate.packaging import BuiltPackage
from sagegate.registry import ApprovalStatus, LocalRegistry, RegistryError, RegistryProtocol, Stage, VersionNotFound
from sagegate.registry.sagemaker import SageMakerRegistry


@pytest.fixture(params=["local", "sagemaker"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistryProtocol]:
    if request.param == "local":
        yield LocalRegistry(tmp_path / "registry")
        return
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket="sagegate-models", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield SageMakerRegistry(
            boto3.client("sagemaker", region_name="eu-west-1"),
            s3,
            bucket="sagegate-models",
            image_uri="123456789012.dkr.ecr.eu-west-1.amazonaws.com/sagegate-inference:1",
        )


def test_register_numbers_versions_and_is_idempotent(
    registry: RegistryProtocol, fraud_logreg: BuiltPackage, fraud_xgboost: BuiltPackage, tmp_path: Path
) -> None:
    first, created = registry.register(fraud_logreg.path)
    assert created and (first.model, first.version, first.status) == ("fraud", "1", ApprovalStatus.PENDING)
    assert first.manifest.version == "1" and first.sha256 == fraud_logreg.manifest.sha256
    again, created = registry.register(fraud_logreg.archive)  # the same artifact, as model.tar.gz
    assert not created and again.version == "1"
    # the XGBoost package, renamed to the same model, is the next version
    other = tmp_path / "xgb-as-fraud"
    shutil.copytree(fraud_xgboost.path, other)
    manifest = fraud_xgboost.manifest.model_copy(update={"name": "fraud"})
    (other / "manifest.json").write_text(manifest.dumps())
    (other / "model.tar.gz").unlink()
    second, created = registry.register(other, stage=Stage.STAGING)
    assert created and second.version == "2" and second.stage is Stage.STAGING
    assert registry.models() == ["fraud"]
    assert [v.version for v in registry.versions("fraud")] == ["1", "2"]
    assert registry.get("fraud", "2").manifest.framework.value == "xgboost"


def test_approve_reject_and_stage(registry: RegistryProtocol, fraud_logreg: BuiltPackage) -> None:
    version, _ = registry.register(fraud_logreg.path)
    approved = registry.approve("fraud", version.version, by="alice", reason="AUC 0.97 on holdout")
    assert (approved.status, approved.decided_by, approved.decision_reason) == (
        ApprovalStatus.APPROVED,
        "alice",
        "AUC 0.97 on holdout",
    )
    staged = registry.set_stage("fraud", version.version, Stage.PRODUCTION)
    assert staged.stage is Stage.PRODUCTION and staged.status is ApprovalStatus.APPROVED
    assert staged.sha256 == fraud_logreg.manifest.sha256  # metadata survives updates
    rejected = registry.reject("fraud", version.version, by="bob", reason="drift on channel")
    assert (rejected.status, rejected.decided_by) == (ApprovalStatus.REJECTED, "bob")
    with pytest.raises(RegistryError, match="needs a reason"):
        registry.reject("fraud", version.version, by="bob", reason=" ")
    with pytest.raises(VersionNotFound, match="no version '9'"):
        registry.approve("fraud", "9", by="alice")


def test_a_modified_artifact_is_refused(registry: RegistryProtocol, fraud_logreg: BuiltPackage, tmp_path: Path) -> None:
    tampered = tmp_path / "tampered"
    shutil.copytree(fraud_logreg.path, tampered)
    with (tampered / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(RegistryError, match="refusing a modified artifact"):
        registry.register(tampered)
    with pytest.raises(RegistryError, match="no model package at"):
        registry.register(tmp_path / "nothing")
    assert registry.models() == []


def _register(root: str, package: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    version, created = LocalRegistry(Path(root)).register(Path(package))
    queue.put((version.version, created, version.sha256))


def test_parallel_processes_never_share_a_version_number(tmp_path: Path, fraud_logreg: BuiltPackage) -> None:
    from sagegate.packaging import build_package

    packages = []
    manifest = fraud_logreg.manifest
    onnx = (fraud_logreg.path / "model.onnx").read_bytes()
    for i in range(6):  # six different artifacts of one model
        target = tmp_path / f"p{i}"
        built = build_package(
            _mutated(onnx, i),
            framework="onnx",
            name="fraud",
            version="0",
            features=manifest.features,
            task="binary",
            labels=["legit", "fraud"],
            sample=manifest.sample,
            output_dir=target,
        )
        packages.append(str(built.path))
    packages += packages[:2]  # and two duplicates racing their originals
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_register, args=(str(tmp_path / "reg"), p, queue)) for p in packages]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    results = [queue.get(timeout=5) for _ in workers]
    created = [(v, sha) for v, was_created, sha in results if was_created]
    assert sorted(int(v) for v, _ in created) == [1, 2, 3, 4, 5, 6]
    assert len({sha for _, sha in created}) == 6
    assert [v.version for v in LocalRegistry(tmp_path / "reg").versions("fraud")] == [str(i) for i in range(1, 7)]


def _mutated(onnx: bytes, i: int) -> bytes:
    """The same model with a different doc string: a different artifact, the same predictions."""
    import onnx as onnx_lib

    model = onnx_lib.load_model_from_string(onnx)
    model.doc_string = f"retrain {i}"
    return model.SerializeToString()
