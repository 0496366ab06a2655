"""POST /v1/batch_predict and GET /v1/jobs/{id}: the local engine for real, Step Functions under moto."""

from __future__ import annotations

import json
import time
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
from fastapi.testclient import TestClient
from moto import mock_aws

from sagegate.batch.jobs import BatchRequest, JobRefused, LocalJobs, StepFunctionsJobs, transform_parameters
from sagegate.deploy.routes import SqliteRouteStore
from sagegate.gateway.app import create_app, current_jobs, current_predictor
from sagegate.gateway.cache import PredictionCache
from sagegate.gateway.catalog import RegistryCatalog
from sagegate.gateway.config import GatewaySettings
from sagegate.gateway.metrics import GatewayMetrics
from sagegate.gateway.online_features import OnlineFeatureStore
from sagegate.gateway.prediction_log import NullLog
from sagegate.gateway.predictor import Predictor
from sagegate.local.data import Transactions
from sagegate.packaging import BuiltPackage
from sagegate.registry import LocalRegistry
from tests.unit.gateway.conftest import FakeEndpoints, manifest


def test_a_local_batch_job_runs_and_reports_progress(
    tmp_path: Path, fraud_logreg: BuiltPackage, transactions: Transactions
) -> None:
    registry = LocalRegistry(tmp_path / "registry")
    registry.register(fraud_logreg.path)
    predictor = Predictor(
        catalog=RegistryCatalog(registry, SqliteRouteStore(tmp_path / "routes.sqlite3")),
        endpoints=FakeEndpoints(),
        cache=PredictionCache(None),
        features=OnlineFeatureStore(None),
        prediction_log=NullLog(),
        metrics=GatewayMetrics(emit=False),
    )
    data = tmp_path / "data"
    data.mkdir()
    jobs = LocalJobs(registry, data)
    app = create_app(GatewaySettings())
    app.dependency_overrides[current_predictor] = lambda: predictor
    app.dependency_overrides[current_jobs] = lambda: jobs
    client = TestClient(app)
    source = data / "in.parquet"
    pq.write_table(pa.Table.from_pylist(transactions.records[:2000]), source)
    body = {"model": "fraud", "input_uri": "in.parquet", "output_uri": "out", "batch_size": 300}
    pending = client.post("/v1/batch_predict", json=body)  # as `sagegate batch`: the latest approved
    assert pending.status_code == 404 and "no approved version" in pending.json()["error"]
    registry.approve("fraud", "1", by="test")

    started = client.post("/v1/batch_predict", json=body)
    assert started.status_code == 202, started.text
    job_id = started.json()["job_id"]
    deadline = time.monotonic() + 60
    while (status := client.get(f"/v1/jobs/{job_id}").json())["status"] == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status["status"] == "SUCCEEDED", status
    assert (status["progress"], status["eta_seconds"], status["predicted"]) == (100.0, 0, 2000)
    assert pq.read_table(status["outputs"][0]).num_rows == 2000
    assert Path(status["outputs"][0]).is_relative_to(data / "out")
    assert client.get("/v1/jobs/nope").status_code == 404
    missing = client.post("/v1/batch_predict", json={"model": "churn", "input_uri": "x", "output_uri": "y"})
    assert missing.status_code == 404
    bad = client.post(
        "/v1/batch_predict", json={"model": "fraud", "input_uri": "x", "output_uri": "y", "capacity": "cheap"}
    )
    assert bad.status_code == 422 and "capacity" in [f["field"] for f in bad.json()["fields"]]


def test_a_local_batch_job_reads_and_writes_only_in_the_data_folder(
    tmp_path: Path, fraud_logreg: BuiltPackage, transactions: Transactions
) -> None:
    """Paths outside the stack's data folder are refused alike whether or not they exist: a caller
    learns nothing of the host's files, and nothing is read or written."""
    registry = LocalRegistry(tmp_path / "registry")
    registry.approve("fraud", registry.register(fraud_logreg.path)[0].version, by="test")
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.parquet").write_bytes(b"")
    (tmp_path / "secret.parquet").write_bytes(b"")
    (data / "escape").symlink_to(tmp_path)
    jobs = LocalJobs(registry, data)
    request = {"model": "fraud", "batch_size": 300}
    for field, other in (("input_uri", "output_uri"), ("output_uri", "input_uri")):
        for outside in (
            str(tmp_path / "secret.parquet"),  # exists
            str(tmp_path / "missing.parquet"),  # does not
            "../secret.parquet",
            "escape/secret.parquet",  # a symbolic link out of the folder
            "/etc/passwd",
        ):
            refused = None
            try:
                jobs.start(BatchRequest.model_validate({**request, field: outside, other: "in.parquet"}), manifest("1"))
            except JobRefused as exc:
                refused = (exc.field, str(exc))
            assert refused == (field, f"{field} must be a path under the stack's data folder {data.resolve()}")
    assert not (tmp_path / "out").exists()


def test_step_functions_jobs_start_the_workflow_and_read_progress_from_s3() -> None:
    with mock_aws():
        sfn, s3 = boto3.client("stepfunctions", region_name="eu-west-1"), boto3.client("s3", region_name="eu-west-1")
        role = boto3.client("iam", region_name="eu-west-1").create_role(RoleName="sfn", AssumeRolePolicyDocument="{}")[
            "Role"
        ]["Arn"]
        machine = sfn.create_state_machine(
            name="batch_inference",
            roleArn=role,
            definition=json.dumps({"StartAt": "Wait", "States": {"Wait": {"Type": "Pass", "End": True}}}),
        )["stateMachineArn"]
        s3.create_bucket(Bucket="sg-batch", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        for i in range(4):
            s3.put_object(Bucket="sg-batch", Key=f"tx/part-{i}.csv", Body=b"a,b\n1,2\n")
        jobs = StepFunctionsJobs(sfn, s3, machine, bucket="sg-batch", resource_prefix="sagegate-dev")
        request = BatchRequest(
            model="fraud",
            input_uri="s3://sg-batch/tx/",
            output_uri="s3://sg-batch/run/",
            capacity="spot",
            batch_size=20_000,
        )
        status = jobs.start(request, manifest("3"))
        started = json.loads(
            sfn.describe_execution(executionArn=machine.replace(":stateMachine:", ":execution:") + f":{status.job_id}")[
                "input"
            ]
        )
        assert (started["capacity"], started["chunk_rows"]) == ("spot", "20000")
        assert started["model_name"].startswith("sagegate-dev-fraud-v3-") and len(started["model_name"]) <= 63
        # the payload fits 20,000 of this model's records with headroom; one transform per vCPU of ml.m5.xlarge
        record_bytes = len(json.dumps(manifest("3").sample[0]))
        assert (started["max_payload_mb"], started["max_concurrent_transforms"]) == transform_parameters(
            record_bytes, "ml.m5.xlarge", 20_000
        )
        assert 1 <= started["max_payload_mb"] <= 100 and started["max_concurrent_transforms"] == 4
        s3.put_object(Bucket="sg-batch", Key="run/part-0.csv.out", Body=b"x")
        report = jobs.get(status.job_id)
        assert report is not None and report.detail["capacity"] == "spot"
        # moto does not run this machine (no execute flag): still RUNNING, one .out of four inputs.
        assert (report.status, report.progress) == ("RUNNING", 25.0)
        assert report.eta_seconds is not None
        assert jobs.get("no-such-job") is None


def test_transform_parameters_stay_within_batch_transforms_limits() -> None:
    assert transform_parameters(200, "ml.m5.xlarge", 1000) == (1, 4)
    assert transform_parameters(2000, "ml.c5.4xlarge", 100_000) == (100, 16)  # capped at 100 MB
    assert transform_parameters(500, "ml.g5.2xlarge", 50_000)[1] == 8
