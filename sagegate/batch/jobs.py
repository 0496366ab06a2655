"""Batch jobs behind `POST /v1/batch_predict` and `GET /v1/jobs/{id}`.

In AWS a job is an execution of the batch_inference state machine; its progress is read from S3
(Batch Transform writes one `.out` object per input object) and its ETA from the elapsed time. On
the local stack a job is the batch engine on a thread of the gateway process, its progress the
rows the engine reports.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from sagegate.manifest import ModelManifest
from sagegate.workflows.names import sagemaker_name, short_hash

__all__ = [
    "BatchRequest",
    "JobRefused",
    "JobStatus",
    "JobsProtocol",
    "LocalJobs",
    "StepFunctionsJobs",
    "transform_parameters",
]


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=63)
    version: str | None = None
    input_uri: str = Field(min_length=1, description="s3://bucket/prefix/ in AWS, a path locally")
    output_uri: str = Field(min_length=1)
    batch_size: int = Field(default=50_000, ge=1, le=1_000_000, description="records per chunk / mini-batch")
    capacity: Literal["on_demand", "spot"] = "on_demand"


class JobRefused(ValueError):
    """The request names something a job may not touch; `field` says which part of the request."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class JobStatus:
    job_id: str
    status: str  # RUNNING, SUCCEEDED, FAILED
    progress: float | None = None  # 0..100
    eta_seconds: float | None = None
    started_at: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "status": self.status,
            "progress": None if self.progress is None else round(self.progress, 1),
            "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds),
            "started_at": self.started_at,
            **self.detail,
        }


class JobsProtocol(Protocol):
    def start(self, request: BatchRequest, manifest: ModelManifest) -> JobStatus: ...

    def get(self, job_id: str) -> JobStatus | None: ...


# vCPUs of the usual inference instance sizes; MaxConcurrentTransforms = one per vCPU (the server
# batches within a request, so more would only queue).
_VCPUS = {
    "large": 2,
    "xlarge": 4,
    "2xlarge": 8,
    "4xlarge": 16,
    "8xlarge": 32,
    "12xlarge": 48,
    "16xlarge": 64,
    "24xlarge": 96,
}


def transform_parameters(record_bytes: int, instance_type: str, batch_size: int) -> tuple[int, int]:
    """(MaxPayloadInMB, MaxConcurrentTransforms) for a model whose records take about `record_bytes`:
    a payload holds `batch_size` records with 50% headroom, within Batch Transform's 1..100 MB."""
    payload_mb = max(1, min(100, -(-int(record_bytes * batch_size * 1.5) // (1024 * 1024))))
    concurrent = _VCPUS.get(instance_type.rsplit(".", 1)[-1], 2)
    return payload_mb, concurrent


def _eta(progress: float | None, elapsed: float) -> float | None:
    if not progress or progress >= 100:
        return 0.0 if progress and progress >= 100 else None
    return elapsed / progress * (100 - progress)


class StepFunctionsJobs:
    """Jobs as executions of the batch_inference state machine over the environment's batch bucket.

    The job's input and output must be in that bucket: the jobs run as the SageMaker role, which may
    read and write there only. Each job is named `<model>-v<version>-<random>` (a Step Functions
    execution, and the transform or training job: 63 characters at most), and its transform model
    `<prefix>-<job id>` (the workflow creates it from the package and deletes it at the end)."""

    def __init__(
        self,
        sfn: Any,
        s3: Any,
        state_machine_arn: str,
        *,
        bucket: str,
        resource_prefix: str,
        instance_type: str = "ml.m5.xlarge",
        instance_count: int = 1,
        poll_seconds: int = 60,
    ) -> None:
        self._sfn = sfn
        self._poll_seconds = poll_seconds
        self._s3 = s3
        self._machine = state_machine_arn
        self._bucket = bucket
        self._prefix = resource_prefix
        self._instance_type = instance_type
        self._instance_count = instance_count

    def _in_bucket(self, field: str, uri: str) -> str:
        if not uri.startswith(f"s3://{self._bucket}/") or ".." in uri.split("/"):
            raise JobRefused(f"{field} must be under s3://{self._bucket}/ (the environment's batch bucket)", field)
        return uri

    def start(self, request: BatchRequest, manifest: ModelManifest) -> JobStatus:
        version = manifest.version
        input_uri = self._in_bucket("input_uri", request.input_uri)
        output_uri = self._in_bucket("output_uri", request.output_uri.rstrip("/") + "/")
        job_id = sagemaker_name(request.model, f"v{version}", suffix=uuid.uuid4().hex[:12])
        record_bytes = max(64, len(json.dumps(manifest.sample[0])))
        payload_mb, concurrent = transform_parameters(record_bytes, self._instance_type, request.batch_size)
        payload = {
            "job_id": job_id,
            "model": request.model,
            "version": version,
            "model_name": sagemaker_name(self._prefix, job_id, suffix=short_hash(job_id)),
            "capacity": request.capacity,
            "input_uri": input_uri,
            "output_uri": output_uri,
            "content_type": "text/csv" if input_uri.endswith(".csv") else "application/jsonlines",
            "instance_type": self._instance_type,
            "instance_count": self._instance_count,
            "max_payload_mb": payload_mb,
            "max_concurrent_transforms": concurrent,
            "poll_seconds": self._poll_seconds,
            "checkpoint_uri": f"{output_uri}_checkpoints/",
            "chunk_rows": str(request.batch_size),
            "max_runtime_seconds": 24 * 3600,
            "max_wait_seconds": 48 * 3600,
        }
        self._sfn.start_execution(stateMachineArn=self._machine, name=job_id, input=json.dumps(payload))
        return JobStatus(job_id, "RUNNING", 0.0, None, datetime.now(UTC).isoformat())

    def get(self, job_id: str) -> JobStatus | None:
        arn = self._machine.replace(":stateMachine:", ":execution:") + f":{job_id}"
        try:
            described = self._sfn.describe_execution(executionArn=arn)
        except self._sfn.exceptions.ExecutionDoesNotExist:
            return None
        payload = json.loads(described["input"])
        started = described["startDate"]
        status = described["status"]
        progress = 100.0 if status == "SUCCEEDED" else self._progress(payload["input_uri"], payload["output_uri"])
        elapsed = (datetime.now(started.tzinfo) - started).total_seconds()
        return JobStatus(
            job_id,
            status,
            progress,
            _eta(progress, elapsed),
            started.isoformat(),
            {
                "model": payload["model"],
                "version": payload["version"],
                "capacity": payload["capacity"],
                "output_uri": payload["output_uri"],
            },
        )

    def _count(self, uri: str, suffix: str = "") -> int:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        paginator = self._s3.get_paginator("list_objects_v2")
        return sum(
            1
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for item in page.get("Contents", [])
            if item["Key"].endswith(suffix)
        )

    def _progress(self, input_uri: str, output_uri: str) -> float | None:
        """Batch Transform writes one .out object per input object: their ratio is the progress."""
        inputs = self._count(input_uri)
        return None if not inputs else min(100.0, 100.0 * self._count(output_uri, ".out") / inputs)


class LocalJobs:
    """Jobs of the local stack: the batch engine on a thread, with the model from the local registry.

    A job reads and writes only under `data` (the stack's data folder): `input_uri` and `output_uri`
    are paths relative to it (or absolute paths inside it); anything that resolves outside it, through
    `..` or a symbolic link, is refused before anything is read, with the same answer whether or not
    it exists."""

    def __init__(self, registry: Any, data: Path) -> None:
        self._registry = registry
        self.data = data.resolve()
        self._jobs: dict[str, JobStatus] = {}
        self._lock = threading.Lock()

    def _confined(self, uri: str, field: str) -> Path:
        path = Path(uri.removeprefix("file://"))
        resolved = (path if path.is_absolute() else self.data / path).resolve()
        if resolved != self.data and self.data not in resolved.parents:
            raise JobRefused(f"{field} must be a path under the stack's data folder {self.data}", field)
        return resolved

    def start(self, request: BatchRequest, manifest: ModelManifest) -> JobStatus:
        source = self._confined(request.input_uri, "input_uri")
        target = self._confined(request.output_uri, "output_uri")
        if not source.exists():
            raise JobRefused(f"input_uri: nothing at {source.relative_to(self.data)} in the data folder", "input_uri")
        request = request.model_copy(update={"input_uri": str(source), "output_uri": str(target)})
        version = manifest.version
        job_id = f"{request.model}-v{version}-{uuid.uuid4().hex[:12]}"
        status = JobStatus(
            job_id,
            "RUNNING",
            0.0,
            None,
            datetime.now(UTC).isoformat(),
            {"model": request.model, "version": version, "capacity": "local", "output_uri": request.output_uri},
        )
        with self._lock:
            self._jobs[job_id] = status
        threading.Thread(target=self._run, args=(status, request, version), name=f"job-{job_id}", daemon=True).start()
        return status

    def _run(self, status: JobStatus, request: BatchRequest, version: str) -> None:
        from sagegate.batch.engine import count_rows, run_batch, shards
        from sagegate.batch.runner import batch_model

        started = time.monotonic()
        try:
            found = self._registry.get(request.model, version)
            with batch_model(Path(found.artifact_uri), name=status.job_id) as model:
                source = Path(request.input_uri)
                total = sum(count_rows(f) for f in shards(source)) or 1
                done = 0

                def advance(rows: int) -> None:
                    nonlocal done
                    done += rows
                    status.progress = min(100.0, 100.0 * done / total)
                    status.eta_seconds = _eta(status.progress, time.monotonic() - started)

                summary = run_batch(
                    model, source, Path(request.output_uri), chunk_rows=request.batch_size, on_chunk=advance
                )
            status.detail.update(
                rows=summary.rows, predicted=summary.predicted, rejected=summary.rejected, outputs=summary.outputs
            )
            status.progress, status.eta_seconds, status.status = 100.0, 0.0, "SUCCEEDED"
        except Exception as exc:  # the job's failure is its status, read through GET /v1/jobs/{id}
            status.status = "FAILED"
            status.detail["error"] = str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__

    def get(self, job_id: str) -> JobStatus | None:
        with self._lock:
            return self._jobs.get(job_id)
