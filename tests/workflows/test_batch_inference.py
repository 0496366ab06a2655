"""stepfunctions/batch_inference.asl.json as the dev stack synthesizes it, started the way the gateway
starts it in AWS (`POST /v1/batch_predict` -> sagegate.batch.jobs.StepFunctionsJobs, as the gateway's
role), executed by moto's Step Functions in an account built from the same template. Each test ends
with every call checked against the synthesized role that made it and botocore's model of the request.

What this cannot prove: that SageMaker runs the jobs (moto reports them Completed at once), and the
real timings of the wait loop. It proves that the gateway's input, the package lookup and each
branch's requests are ones AWS accepts and the roles allow, and that the manifest and the
notification are written.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from sagegate.batch.jobs import BatchRequest, JobRefused, StepFunctionsJobs
from sagegate.workflows.definitions import load_definition
from tests.unit.gateway.conftest import manifest
from tests.workflows.conftest import Failures, finished, notifications, run_execution

MANIFEST = manifest("3")


@pytest.fixture
def batch(world: SimpleNamespace) -> SimpleNamespace:
    """The dev account with fraud v3 registered, and the gateway's job starter as the gateway's role."""
    with world.recorder.off():
        world.sm.create_model_package_group(ModelPackageGroupName="fraud")
        for _ in range(3):
            world.sm.create_model_package(
                ModelPackageGroupName="fraud",
                InferenceSpecification={
                    "Containers": [
                        {"Image": "img", "ModelDataUrl": f"s3://{world.artifacts}/models/fraud/3/model.tar.gz"}
                    ],
                    "SupportedContentTypes": ["text/csv"],
                    "SupportedResponseMIMETypes": ["text/csv"],
                },
                ModelApprovalStatus="Approved",
            )
    gateway = world.recorder.session(world.gateway_role)
    world.jobs = StepFunctionsJobs(
        gateway.client("stepfunctions"),
        gateway.client("s3"),
        world.machines[world.batch_machine],
        bucket=world.gateway_env["SAGEGATE_GATEWAY_BATCH_BUCKET"],
        resource_prefix=world.gateway_env["SAGEGATE_GATEWAY_RESOURCE_PREFIX"],
        poll_seconds=0,
    )
    world.machine_role = world.batch_role
    return world


def start(env: SimpleNamespace, capacity: str) -> dict[str, Any]:
    """POST /v1/batch_predict's job, followed to its end."""
    request = BatchRequest(
        model="fraud",
        input_uri=f"s3://{env.batch_bucket}/inputs/transactions.csv",
        output_uri=f"s3://{env.batch_bucket}/outputs/run-1/",
        capacity=capacity,
        batch_size=20_000,
    )
    status = env.jobs.start(request, MANIFEST)
    arn = env.machines[env.batch_machine].replace(":stateMachine:", ":execution:") + f":{status.job_id}"
    return {"job_id": status.job_id, **finished(env, arn)}


def test_on_demand_runs_batch_transform_on_a_model_made_from_the_package(batch: SimpleNamespace) -> None:
    result = start(batch, "on_demand")
    assert result["status"] == "SUCCEEDED", result
    job_id = result["job_id"]
    with batch.recorder.off():
        described = batch.sm.describe_transform_job(TransformJobName=job_id)
        models = {m["ModelName"] for m in batch.sm.list_models()["Models"]}
    assert (described["BatchStrategy"], described["TransformInput"]["SplitType"]) == ("MultiRecord", "Line")
    model = described["ModelName"]
    assert model.startswith("sagegate-dev-") and len(model) <= 63
    (created,) = [c.params for c in batch.recorder.calls[batch.built_calls :] if c.operation == "CreateModel"]
    assert created["PrimaryContainer"]["ModelPackageName"].endswith("model-package/fraud/3")
    assert model not in models  # deleted once the job ended
    with batch.recorder.off():
        manifest = json.loads(
            batch.s3.get_object(Bucket=batch.batch_bucket, Key=f"manifests/{job_id}.json")["Body"].read()
        )
    assert manifest["job"]["status"] == "Completed"
    assert notifications(batch)[0].startswith(f"Batch job {job_id} (fraud v3, on_demand) completed")


def test_spot_reads_the_model_from_the_registered_package(batch: SimpleNamespace) -> None:
    result = start(batch, "spot")
    assert result["status"] == "SUCCEEDED", result
    with batch.recorder.off():
        described = batch.sm.describe_training_job(TrainingJobName=result["job_id"])
    assert described["EnableManagedSpotTraining"] is True
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in described["InputDataConfig"]}
    assert channels["model"] == f"s3://{batch.artifacts}/models/fraud/3/model.tar.gz"
    assert described["CheckpointConfig"]["S3Uri"].startswith(f"s3://{batch.batch_bucket}/outputs/run-1/")


def test_a_job_that_cannot_start_is_notified_and_fails(batch: SimpleNamespace) -> None:
    status = batch.jobs.start(
        BatchRequest(
            model="fraud", input_uri=f"s3://{batch.batch_bucket}/in/", output_uri=f"s3://{batch.batch_bucket}/o/"
        ),
        MANIFEST,
    )
    arn = batch.machines[batch.batch_machine].replace(":stateMachine:", ":execution:") + f":{status.job_id}"
    finished(batch, arn)
    with batch.recorder.off():
        payload = json.loads(batch.sfn.describe_execution(executionArn=arn)["input"])
    broken = {**payload, "instance_count": "two"}  # SageMaker refuses the request
    result = run_execution(batch, batch.batch_machine, "broken", broken)
    assert result["status"] == "FAILED"
    assert result["states"][-2:] == ["NotifyFailure", "Failed"]
    assert "DeleteFailedJobModel" in result["states"]
    assert any(m.startswith(f"Batch job {status.job_id} (fraud v3) failed:") for m in notifications(batch))
    # the refused request is this test's doing; every other call is checked at the end
    batch.recorder.calls[:] = [
        c for c in batch.recorder.calls if c.params.get("TransformResources", {}).get("InstanceCount") != "two"
    ]


def test_a_describe_that_keeps_failing_is_notified(batch: SimpleNamespace) -> None:
    """The wait loop's Describe has retriers and a Catch: throttled past its retries, the job's
    failure is notified instead of the execution ending silently."""
    Failures.throttle = {"DescribeTransformJob": 99}
    result = start(batch, "on_demand")
    assert result["status"] == "FAILED", result
    assert Failures.throttle["DescribeTransformJob"] == 99 - 6  # the first attempt and the retrier's five
    assert len(batch.retry_waits) == 5 and max(batch.retry_waits) <= 30  # backoff, capped at 30 s
    assert "NotifyFailure" in result["states"]


def test_jobs_read_and_write_only_the_batch_bucket(batch: SimpleNamespace) -> None:
    for field in ("input_uri", "output_uri"):
        request = BatchRequest(
            model="fraud",
            **{
                "input_uri": f"s3://{batch.batch_bucket}/in/",
                "output_uri": f"s3://{batch.batch_bucket}/out/",
                field: "s3://somebody-elses-bucket/data/",
            },
        )
        with pytest.raises(JobRefused, match=field):
            batch.jobs.start(request, MANIFEST)


def test_every_placeholder_must_be_given() -> None:
    with pytest.raises(KeyError, match="no value for"):
        load_definition("batch_inference", {"KmsKeyArn": "k"})
