"""The spot entry point in a SageMaker training job's folder layout, as a process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sagegate.local.data import Transactions
from sagegate.packaging import BuiltPackage

pytestmark = pytest.mark.integration


def layout(root: Path, package: BuiltPackage | None, records: list[dict]) -> None:  # type: ignore[type-arg]
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(
        json.dumps({"model": "fraud", "version": "1", "chunk_rows": "250", "id_columns": "id"})
    )
    (root / "input" / "data" / "input").mkdir(parents=True)
    for shard in range(2):
        part = records[shard::2]
        pq.write_table(pa.Table.from_pylist(part), root / "input" / "data" / "input" / f"shard-{shard}.parquet")
    if package is not None:
        (root / "input" / "data" / "model").mkdir(parents=True)
        shutil.copy(package.archive, root / "input" / "data" / "model" / "model.tar.gz")


def spot(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sagegate.batch.spot", "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_spot_job_predicts_every_shard_and_resumes_from_its_checkpoints(
    tmp_path: Path, fraud_logreg: BuiltPackage, transactions: Transactions
) -> None:
    records = [{"id": i, **r} for i, r in enumerate(transactions.records[:2000])]
    layout(tmp_path, fraud_logreg, records)
    first = spot(tmp_path)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout.splitlines()[-1]) == {
        "rows": 2000,
        "predicted": 2000,
        "rejected": 0,
        "resumed_chunks": 0,
    }
    out = tmp_path / "output" / "data"
    ids = sorted(
        i
        for shard in (0, 1)
        for i in pq.read_table(out / f"shard-{shard}.predictions.parquet").column("id").to_pylist()
    )
    assert ids == list(range(2000))
    # a restarted job (after a spot interruption) finds its checkpoints and redoes nothing
    again = spot(tmp_path)
    assert json.loads(again.stdout.splitlines()[-1]) == {
        "rows": 2000,
        "predicted": 2000,
        "rejected": 0,
        "resumed_chunks": 8,
    }
    assert pq.read_table(out / "shard-0.predictions.parquet").num_rows == 1000  # nothing lost by the second join


def test_a_missing_model_channel_is_a_failure_sagemaker_can_show(tmp_path: Path, transactions: Transactions) -> None:
    layout(tmp_path, None, [{"id": 0, **transactions.records[0]}])
    done = spot(tmp_path)
    assert done.returncode == 1
    assert "the 'model' channel is missing" in (tmp_path / "output" / "failure").read_text()
