"""The batch engine on every format, against the real-time server, with bad rows, and killed mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from sagegate.batch.engine import run_batch
from sagegate.local.data import Transactions
from sagegate.packaging import BuiltPackage
from sagegate.server.model import LoadedModel
from tests.integration.conftest import StartServer
from tests.toy_models import heavy_package

pytestmark = pytest.mark.integration


def write(table: pa.Table, path: Path) -> Path:
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    elif path.suffix == ".csv":
        pa_csv.write_csv(table, path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
    return path


def read(path: Path) -> list[dict]:  # type: ignore[type-arg]
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()  # type: ignore[no-any-return]
    if path.suffix == ".csv":
        return pa_csv.read_csv(path).to_pylist()  # type: ignore[no-any-return]
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_every_format_matches_the_real_time_server(
    suffix: str, tmp_path: Path, fraud_xgboost: BuiltPackage, transactions: Transactions, start_server: StartServer
) -> None:
    records = [{"id": i, **r} for i, r in enumerate(transactions.records[:1500])]
    source = write(pa.Table.from_pylist(records), tmp_path / f"in{suffix}")
    model = LoadedModel.load("fraud", fraud_xgboost.path, ["CPUExecutionProvider"])
    summary = run_batch(model, source, tmp_path / "out", chunk_rows=400, id_columns=["id"])
    assert (summary.rows, summary.predicted, summary.rejected) == (1500, 1500, 0)
    rows = read(Path(summary.outputs[0]))
    assert [r["id"] for r in rows] == list(range(1500))

    server = start_server(fraud_xgboost)
    answer = httpx.post(f"{server.url}/invocations", json={"instances": transactions.records[:1000]}, timeout=60)
    expected = [p["prediction"] for p in answer.json()["predictions"]]
    np.testing.assert_allclose([r["prediction"] for r in rows[:1000]], expected, atol=1e-6)
    assert [r["label"] for r in rows[:1000]] == [p["label"] for p in answer.json()["predictions"]]


def test_bad_rows_go_to_the_errors_file_with_their_reason(
    tmp_path: Path, fraud_logreg: BuiltPackage, transactions: Transactions
) -> None:
    records = [{"id": i, **r} for i, r in enumerate(transactions.records[:300])]
    records[5]["hour"] = 99
    records[17]["merchant_category"] = "casino"
    records[40]["amount"] = None
    records[41]["amount"] = -3.0
    source = write(pa.Table.from_pylist(records), tmp_path / "in.parquet")
    model = LoadedModel.load("fraud", fraud_logreg.path, ["CPUExecutionProvider"])
    summary = run_batch(model, source, tmp_path / "out", chunk_rows=16, id_columns=["id"])
    assert (summary.rows, summary.predicted, summary.rejected) == (300, 296, 4)
    errors = {e["row"]: e for e in read(tmp_path / "out" / "errors.jsonl")}
    assert errors[5]["field"] == "hour" and "above the maximum 23" in errors[5]["reason"]
    assert errors[17]["field"] == "merchant_category" and "'casino' is not one of" in errors[17]["reason"]
    assert (errors[40]["field"], errors[40]["reason"]) == ("amount", "is required")
    assert "below the minimum 0" in errors[41]["reason"]
    assert {r["id"] for r in read(Path(summary.outputs[0]))} == set(range(300)) - {5, 17, 40, 41}


def test_a_killed_run_resumes_and_every_row_is_written_exactly_once(tmp_path: Path, packages_dir: Path) -> None:
    package = heavy_package(packages_dir / "batch-mlp", hidden=512, layers=2, name="batch-mlp")
    rng = np.random.default_rng(3)
    n = 120_000
    table = pa.table({"id": np.arange(n), **{f"f{i}": rng.normal(size=n) for i in range(30)}})
    source = write(table, tmp_path / "big.parquet")
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "sagegate",
        "batch",
        str(source),
        "--output",
        str(out),
        "--package",
        str(package.path),
        "--id-column",
        "id",
        "--chunk-rows",
        "2000",
        "--threads",
        "1",
    ]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = out / "_checkpoint.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (
            checkpoint.exists()
            and len(json.loads(checkpoint.read_text() or "{}").get("done", {}).get("big.parquet", [])) >= 3
        ):
            break
        time.sleep(0.005)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert not (out / "_summary.json").exists(), "the run finished before it could be killed"
    done_before = len(json.loads(checkpoint.read_text())["done"]["big.parquet"])
    assert 3 <= done_before < n // 2000

    second = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert second.returncode == 0, second.stderr
    assert f"{done_before} chunks already done" in second.stderr.replace("\n", " ")
    ids = pq.read_table(out / "big.predictions.parquet", columns=["id"]).column("id").to_numpy()
    assert len(ids) == n and np.array_equal(np.sort(ids), np.arange(n))  # each row exactly once


def test_a_run_over_another_model_or_changed_input_is_not_continued(
    tmp_path: Path, fraud_xgboost: BuiltPackage, fraud_logreg: BuiltPackage, transactions: Transactions
) -> None:
    """Chunks done by one model over one input are never mixed with another's: the output would
    hold predictions of two models, or of rows that are no longer in the input, with exit 0."""
    import shutil

    from sagegate.batch.engine import RunConflict

    records = [{"id": i, **r} for i, r in enumerate(transactions.records[:900])]
    source = write(pa.Table.from_pylist(records), tmp_path / "in.csv")
    out = tmp_path / "out"
    xgb = LoadedModel.load("fraud", fraud_xgboost.path, ["CPUExecutionProvider"])
    first = run_batch(xgb, source, out, chunk_rows=300, id_columns=["id"])
    assert first.predicted == 900
    # the same run again: every chunk done already, nothing predicted twice
    assert run_batch(xgb, source, out, chunk_rows=300, id_columns=["id"]).skipped_chunks == 3

    logreg = LoadedModel.load("fraud", fraud_logreg.path, ["CPUExecutionProvider"])
    with pytest.raises(RunConflict, match=r"the model was fraud-xgb v1 \(sha256 \w{12}\), now fraud v1"):
        run_batch(logreg, source, out, chunk_rows=300, id_columns=["id"])
    with pytest.raises(RunConflict, match="chunk rows was 300, now 200"):
        run_batch(xgb, source, out, chunk_rows=200, id_columns=["id"])

    changed = [{**r, "amount": r["amount"] + 1} if r["id"] == 450 else r for r in records]
    write(pa.Table.from_pylist(changed), source)  # one value, mid-file
    with pytest.raises(RunConflict, match=r"input in\.csv changed"):
        run_batch(xgb, source, out, chunk_rows=300, id_columns=["id"])
    restarted = run_batch(xgb, source, out, chunk_rows=300, id_columns=["id"], restart=True)
    assert (restarted.predicted, restarted.skipped_chunks) == (900, 0)

    # the same bytes copied anew (a new mtime, as a spot job's re-downloaded input): compared by content
    time.sleep(0.01)
    shutil.copy(source, tmp_path / "copy.csv")
    os.replace(tmp_path / "copy.csv", source)
    assert run_batch(xgb, source, out, chunk_rows=300, id_columns=["id"]).skipped_chunks == 3


def test_the_cli_refuses_to_continue_another_run_in_one_line(
    tmp_path: Path, fraud_xgboost: BuiltPackage, fraud_logreg: BuiltPackage, transactions: Transactions
) -> None:
    source = write(pa.Table.from_pylist(transactions.records[:200]), tmp_path / "in.parquet")

    def batch(package: BuiltPackage, *extra: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "sagegate", "batch", str(source), "-o", str(tmp_path / "out")]
        command += ["--package", str(package.path), *extra]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    assert batch(fraud_xgboost).returncode == 0
    refused = batch(fraud_logreg)
    assert refused.returncode == 1
    assert "cannot be continued" in refused.stderr and "--restart" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert batch(fraud_logreg, "--restart").returncode == 0


def test_parts_share_one_schema_when_a_chunk_has_no_answered_row(tmp_path: Path) -> None:
    """A multiclass model's prediction is its label (text) and the label a dictionary column; a
    chunk whose rows were all refused must write the same types, or the Parquet dataset of parts
    cannot be read as one table."""
    from sklearn.linear_model import LogisticRegression

    from sagegate.packaging import build_package

    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 2))
    model = LogisticRegression().fit(x, np.digitize(x[:, 0], [-0.5, 0.5]))
    built = build_package(
        model,
        framework="sklearn",
        name="tri",
        version="1",
        features=[{"name": "a", "type": "float", "minimum": -10, "maximum": 10}, {"name": "b", "type": "float"}],
        task="multiclass",
        labels=["0", "1", "2"],
        sample=[{"a": 0.1, "b": 0.2}],
        output_dir=tmp_path / "pkg",
    )
    rows = [{"id": i, "a": float(x[i, 0]), "b": float(x[i, 1])} for i in range(30)]
    for i in range(10, 20):
        rows[i]["a"] = 99.0  # the whole second chunk refused
    source = write(pa.Table.from_pylist(rows), tmp_path / "in.parquet")
    loaded = LoadedModel.load("tri", built.path, ["CPUExecutionProvider"])
    summary = run_batch(loaded, source, tmp_path / "out", chunk_rows=10, id_columns=["id"])
    assert (summary.predicted, summary.rejected) == (20, 10)
    parts = sorted(Path(summary.outputs[0]).glob("*.parquet"))
    assert len(parts) == 3
    schemas = {str(pq.read_schema(p)) for p in parts}
    assert len(schemas) == 1, schemas
    table = pq.read_table(summary.outputs[0])
    assert table.num_rows == 20 and set(table.column("prediction").to_pylist()) <= {"0", "1", "2"}


def test_explain_adds_each_rows_contributions_as_the_server_explains_it(
    tmp_path: Path, fraud_xgboost: BuiltPackage, transactions: Transactions
) -> None:
    """--explain: base_value and contribution.<feature> per row, the same numbers the server's
    explanation of that record gives, and a run without them is not continued with them."""
    from sagegate.batch.engine import RunConflict

    records = [{"id": i, **r} for i, r in enumerate(transactions.records[:300])]
    source = write(pa.Table.from_pylist(records), tmp_path / "in.parquet")
    model = LoadedModel.load("fraud", fraud_xgboost.path, ["CPUExecutionProvider"])
    summary = run_batch(model, source, tmp_path / "out", chunk_rows=128, id_columns=["id"], explain=True)
    rows = read(Path(summary.outputs[0]))
    assert len(rows) == 300
    features = [f.name for f in model.manifest.features]
    direct = model.explain_rows(model.pipeline.rows_from_records(transactions.records[:300]))
    for row, explanation in zip(rows, direct, strict=True):
        assert row["base_value"] == pytest.approx(explanation["base_value"])
        for name in features:
            assert row[f"contribution.{name}"] == pytest.approx(explanation["contributions"][name], abs=1e-9)
    with pytest.raises(RunConflict, match="explain was True, now False"):
        run_batch(model, source, tmp_path / "out", chunk_rows=128, id_columns=["id"])


def test_the_cli_adds_contributions_that_add_up_to_each_prediction_and_refuses_a_model_without_an_explainer(
    tmp_path: Path, fraud_xgboost: BuiltPackage, transactions: Transactions
) -> None:
    """`sagegate batch --explain`: per row, base_value plus the contribution.<feature> columns is the
    margin of the row's predicted probability (TreeSHAP of the XGBoost model, log-odds); a package
    without an explainer is refused in one line before any row is read."""
    import shutil

    source = write(pa.Table.from_pylist(transactions.records[:200]), tmp_path / "in.parquet")

    def batch(package: Path, out: str, *extra: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "sagegate", "batch", str(source), "-o", str(tmp_path / out)]
        command += ["--package", str(package), *extra]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    done = batch(fraud_xgboost.path, "out", "--explain")
    assert done.returncode == 0, done.stderr
    table = pq.read_table(tmp_path / "out" / "in.predictions.parquet")
    names = [f.name for f in fraud_xgboost.manifest.features]
    assert table.num_rows == 200
    assert {"base_value", *(f"contribution.{n}" for n in names)} <= set(table.column_names)
    margin = table.column("base_value").to_numpy() + sum(table.column(f"contribution.{n}").to_numpy() for n in names)
    probability = table.column("prediction").to_numpy()  # a binary model's: its positive class's
    np.testing.assert_allclose(1 / (1 + np.exp(-margin)), probability, atol=1e-4)

    bare = tmp_path / "bare"
    shutil.copytree(fraud_xgboost.path, bare)
    (bare / "manifest.json").write_text(fraud_xgboost.manifest.model_copy(update={"explainer": None}).dumps())
    (bare / "explainer.npz").unlink()
    refused = batch(bare, "refused", "--explain")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "error: model fraud-xgb v1 has no explainer: package it with explanations on (the default)"
    ], refused.stderr
    assert not (tmp_path / "refused" / "in.predictions.parquet").exists()
