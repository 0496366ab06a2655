"""stepfunctions/batch_inference.asl.json executed by moto's Step Functions, against moto's SageMaker,
S3 and SNS.

What this cannot prove: that SageMaker runs the jobs (moto reports them Completed at once), IAM,
and the real timings of the wait loop. It proves the definition parses and runs, that each branch
calls SageMaker with the parameters it should, that the manifest and the notification are written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from sagegate.workflows.definitions import load_definition

REGION = "eu-west-1"


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="sagegate-jobs", CreateBucketConfiguration={"LocationConstraint": REGION})
        key = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["Arn"]
        sns, sqs = boto3.client("sns", region_name=REGION), boto3.client("sqs", region_name=REGION)
        topic = sns.create_topic(Name="sagegate-batch")["TopicArn"]
        queue = sqs.create_queue(QueueName="notifications")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
        role = boto3.client("iam", region_name=REGION).create_role(
            RoleName="sfn", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []})
        )["Role"]["Arn"]
        definition = load_definition(
            "batch_inference",
            {
                "KmsKeyArn": key,
                "BatchImageUri": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/sagegate-batch:1",
                "SageMakerRoleArn": role,
                "ManifestBucket": "sagegate-jobs",
                "TopicArn": topic,
            },
        )
        sfn = boto3.client("stepfunctions", region_name=REGION)
        machine = sfn.create_state_machine(name="batch_inference", definition=definition, roleArn=role)
        yield {
            "sfn": sfn,
            "machine": machine["stateMachineArn"],
            "s3": s3,
            "sqs": sqs,
            "queue": queue,
            "sagemaker": boto3.client("sagemaker", region_name=REGION),
        }


def job(job_id: str, capacity: str) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "model": "fraud",
        "version": "3",
        "model_name": "fraud-v3",
        "capacity": capacity,
        "input_uri": "s3://in/transactions/",
        "output_uri": f"s3://out/{job_id}/",
        "content_type": "text/csv",
        "instance_type": "ml.m5.xlarge",
        "instance_count": 2,
        "max_payload_mb": 6,
        "max_concurrent_transforms": 4,
        "poll_seconds": 0,
        "checkpoint_uri": f"s3://ckpt/{job_id}/",
        "model_uri": "s3://models/fraud/abc/",
        "max_runtime_seconds": 3600,
        "max_wait_seconds": 7200,
        "chunk_rows": "50000",
    }


def run(aws: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    arn = aws["sfn"].start_execution(stateMachineArn=aws["machine"], name=payload["job_id"], input=json.dumps(payload))[
        "executionArn"
    ]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        described = aws["sfn"].describe_execution(executionArn=arn)
        if described["status"] != "RUNNING":
            return {
                "status": described["status"],
                "arn": arn,
                "states": [
                    e["stateEnteredEventDetails"]["name"]
                    for e in aws["sfn"].get_execution_history(executionArn=arn)["events"]
                    if "stateEnteredEventDetails" in e
                ],
            }
        time.sleep(0.1)
    raise AssertionError("the execution did not finish")


def notifications(aws: dict[str, Any]) -> list[str]:
    messages = aws["sqs"].receive_message(QueueUrl=aws["queue"], MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"])["Message"] for m in messages]


def test_on_demand_runs_a_multi_record_batch_transform(aws: dict[str, Any]) -> None:
    result = run(aws, job("job-ondemand-1", "on_demand"))
    assert result["status"] == "SUCCEEDED", result
    assert result["states"][:4] == ["ChooseCapacity", "StartTransformJob", "WaitForTransform", "DescribeTransformJob"]
    described = aws["sagemaker"].describe_transform_job(TransformJobName="job-ondemand-1")
    assert (described["BatchStrategy"], described["MaxPayloadInMB"], described["ModelName"]) == (
        "MultiRecord",
        6,
        "fraud-v3",
    )
    assert described["TransformInput"]["SplitType"] == "Line"
    manifest = json.loads(
        aws["s3"].get_object(Bucket="sagegate-jobs", Key="batch-jobs/job-ondemand-1/manifest.json")["Body"].read()
    )
    assert (manifest["job"]["status"], manifest["output_uri"]) == ("Completed", "s3://out/job-ondemand-1/")
    assert notifications(aws) == ["Batch job job-ondemand-1 (fraud v3, on_demand) completed: s3://out/job-ondemand-1/"]


def test_spot_runs_a_managed_spot_training_job_with_checkpoints(aws: dict[str, Any]) -> None:
    result = run(aws, job("job-spot-1", "spot"))
    assert result["status"] == "SUCCEEDED", result
    assert "StartSpotJob" in result["states"] and "StartTransformJob" not in result["states"]
    described = aws["sagemaker"].describe_training_job(TrainingJobName="job-spot-1")
    assert described["EnableManagedSpotTraining"] is True
    assert described["CheckpointConfig"]["S3Uri"] == "s3://ckpt/job-spot-1/"
    assert described["StoppingCondition"]["MaxWaitTimeInSeconds"] == 7200
    assert notifications(aws)[0].startswith("Batch job job-spot-1 (fraud v3, spot) completed")


def test_a_job_that_cannot_start_is_notified_and_fails(aws: dict[str, Any]) -> None:
    broken = job("job-broken", "on_demand")
    broken["instance_count"] = "two"  # SageMaker refuses the request
    result = run(aws, broken)
    assert result["status"] == "FAILED"
    assert result["states"][-2:] == ["NotifyFailure", "Failed"]
    assert notifications(aws)[0].startswith("Batch job job-broken (fraud v3) failed:")


def test_every_placeholder_must_be_given() -> None:
    with pytest.raises(KeyError, match="no value for"):
        load_definition("batch_inference", {"KmsKeyArn": "k"})
