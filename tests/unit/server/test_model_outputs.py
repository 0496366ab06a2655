"""A model that answers NaN (or infinity) for a record is a failure of the model, never a 200 whose
prediction JSON carries as null, and in a batch that row is an error with its reason."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sagegate.batch.engine import run_batch
from sagegate.server.exceptions import ModelOutputError
from sagegate.server.model import LoadedModel
from tests.toy_models import log_package


def test_a_nan_answer_fails_the_request_and_names_the_model(tmp_path: Path) -> None:
    package = log_package(tmp_path / "log")
    model = LoadedModel.load("logarithm", package.path, ["CPUExecutionProvider"])
    good = model.predict_rows(model.pipeline.rows_from_records([{"f0": 1.0}]))
    assert good[0]["prediction"] == pytest.approx(0.0)
    with pytest.raises(ModelOutputError, match="model logarithm answered a value that is not a number for 1 of 2"):
        model.predict_rows(model.pipeline.rows_from_records([{"f0": 1.0}, {"f0": -1.0}]))


def test_a_nan_answer_in_a_batch_is_that_rows_error(tmp_path: Path) -> None:
    package = log_package(tmp_path / "log")
    model = LoadedModel.load("logarithm", package.path, ["CPUExecutionProvider"])
    pq.write_table(pa.table({"id": [0, 1, 2], "f0": [1.0, -1.0, 2.0]}), tmp_path / "in.parquet")
    summary = run_batch(model, tmp_path / "in.parquet", tmp_path / "out", id_columns=["id"])
    assert (summary.predicted, summary.rejected) == (2, 1)
    errors = (tmp_path / "out" / "errors.jsonl").read_text()
    assert '"row":1' in errors.replace(" ", "") and "the model's answer is not a number" in errors
    assert pq.read_table(summary.outputs[0]).column("id").to_pylist() == [0, 2]
