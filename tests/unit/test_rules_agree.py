"""One rule set: every path that takes feature values accepts and refuses the same records, with the
same field and reason, and gives the model the same input for the records it accepts.

The paths: the gateway's validator (JSON parsed by the standard library, as FastAPI does), the
inference server's JSON and JSON Lines bodies (orjson), its CSV and x-npy bodies, its tensor path
(x-npy and OIP tensors validated as one block; OIP's one input per feature), and the batch
engine's JSON Lines, Parquet and CSV files (read by the engine's own readers). Hypothesis writes the
records: valid values, values of every wrong type, numbers beyond int64, float and float32, NaN and
infinity, numbers as text, lone surrogates, missing and unknown fields.

Two families, by what a format can carry: JSON-typed (gateway, server JSON/JSON Lines, batch JSON
Lines and Parquet) and text (server CSV, batch CSV). They must agree within a family always, and
across the families for the records whose CSV text says what their JSON says ("faithful" ones:
numbers for numeric features, booleans for boolean ones, non-empty text for text ones).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sagegate.batch.columns import validate_columns, validate_records
from sagegate.batch.engine import _chunks, _record
from sagegate.features import FeaturePipeline
from sagegate.manifest import Feature
from sagegate.server import codecs
from sagegate.server.exceptions import BadRequest
from sagegate.validation import RecordValidator

FEATURES = [
    Feature.model_validate(f)
    for f in (
        {"name": "amount", "type": "float", "minimum": 0, "maximum": 1e6, "transforms": [{"kind": "log1p"}]},
        {"name": "hour", "type": "int", "minimum": 0, "maximum": 23},
        {
            "name": "score",
            "type": "float",
            "required": False,
            "transforms": [{"kind": "impute", "value": 0.5}, {"kind": "standardize", "mean": 1.0, "std": 1e-30}],
        },
        {"name": "count", "type": "int", "required": False, "default": 0},
        {"name": "flag", "type": "bool", "required": False, "default": False},
        {
            "name": "channel",
            "type": "categorical",
            "categories": ["web", "pos", "02134"],
            "transforms": [{"kind": "one_hot"}],
        },
        {
            "name": "city",
            "type": "string",
            "required": False,
            "default": "paris",
            "transforms": [{"kind": "ordinal", "categories": ["paris", "rome"]}],
        },
    )
]
NUMERIC = [f for f in FEATURES if f.type.is_numeric]
PIPELINE = FeaturePipeline(FEATURES)
NUMERIC_PIPELINE = FeaturePipeline(NUMERIC)
ABSENT = object()

numbers = st.one_of(
    st.integers(-5, 30),
    st.floats(-10, 2e6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**400), 10**400),
    st.sampled_from([2**53, 2**53 + 1, 2**63, -(2**63), 1e300, 3.5e38, 1e-320, -0.0]),
)
texts = st.one_of(
    st.sampled_from(["web", "pos", "02134", "rome", "fax", "", " web", "12.5", "true"]), st.text(max_size=4)
)
wrong = st.one_of(
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
    st.sampled_from(["\ud800x", "12", "nan"]),
)
value = st.one_of(st.just(ABSENT), st.none(), numbers, texts, st.booleans(), wrong)


def _records(features: list[Feature]) -> st.SearchStrategy[dict[str, Any]]:
    fields = {f.name: value for f in features}
    extra = st.one_of(st.just({}), st.just({"colour": "red"}))
    return st.builds(
        lambda chosen, more: {**{k: v for k, v in chosen.items() if v is not ABSENT}, **more},
        st.fixed_dictionaries(fields),
        extra,
    )


Verdict = tuple[str | None, str] | None  # (field, reason) of the first rule broken, or None


def _via_gateway(record: dict[str, Any]) -> Verdict:
    _, errors = RecordValidator(FEATURES).check(json.loads(json.dumps(record)))
    return (errors[0].field, errors[0].reason) if errors else None


def _server(body: bytes, content_type: str, pipeline: FeaturePipeline) -> tuple[Verdict, np.ndarray | None]:
    try:
        rows = codecs.decode(body, content_type, pipeline, 10)
    except BadRequest as exc:
        detail = exc.detail
        reason = (
            exc.message.split(": ", 1)[1] if detail.get("field") or detail.get("record") is not None else exc.message
        )
        return (detail.get("field"), reason), None
    return None, pipeline.transform(rows)


def _batch_verdict(batch: Any) -> tuple[Verdict, np.ndarray | None]:
    if batch.errors:
        return (batch.errors[0].field, batch.errors[0].reason), None
    return None, batch.matrix


def _known(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k in PIPELINE.names}


def json_paths(record: dict[str, Any], tmp: Path) -> dict[str, tuple[Verdict, np.ndarray | None]]:
    body = json.dumps(record).encode()
    found = {
        "gateway": (_via_gateway(record), None),
        "server json": _server(b'{"instances": [' + body + b"]}", "application/json", PIPELINE),
        "server jsonl": _server(body, "application/jsonlines", PIPELINE),
    }
    # Batch files have other columns beside the features (ids, labels): they are left aside there.
    known = _known(record)
    line = json.dumps(known).encode()
    found["batch jsonl"] = _batch_verdict(validate_records(PIPELINE, [_record(line)]))
    try:
        table = pa.Table.from_pylist([known])
        pq.write_table(table, tmp / "one.parquet")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError, TypeError, ValueError):
        pass  # not one Parquet row: an integer beyond int64, a lone surrogate, an empty struct
    else:
        if table.num_rows == 1:  # (a row without columns is no row)
            found["batch parquet"] = _batch_verdict(validate_columns(PIPELINE, pq.read_table(tmp / "one.parquet")))
    return found


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int | str):
        return str(value)
    return json.dumps(value)


def csv_paths(record: dict[str, Any], tmp: Path, model: Any) -> dict[str, tuple[Verdict, np.ndarray | None]] | None:
    known = _known(record)
    if not known or any(isinstance(v, str) and not v.isprintable() for v in known.values()):
        return None  # a CSV cannot hold these as the same text
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(list(known))
    writer.writerow([_cell(v) for v in known.values()])
    text = out.getvalue()
    (tmp / "one.csv").write_text(text)
    (chunk,) = list(_chunks(model, tmp / "one.csv", 10, [], lambda i: False))
    return {
        "server csv": _server(text.encode(), "text/csv", PIPELINE),
        "batch csv": _batch_verdict(chunk.batch),
    }


def faithful(record: dict[str, Any]) -> bool:
    for feature in FEATURES:
        if feature.name not in record or record[feature.name] is None:
            continue
        v = record[feature.name]
        if feature.type.value == "bool":
            ok = isinstance(v, bool)
        elif feature.type.is_numeric:
            ok = isinstance(v, int | float) and not isinstance(v, bool)
        else:
            ok = isinstance(v, str) and v != "" and v.isprintable()
        if not ok:
            return False
    return True


def _agree(found: dict[str, tuple[Verdict, np.ndarray | None]], record: dict[str, Any]) -> None:
    verdicts = {path: verdict for path, (verdict, _) in found.items()}
    assert len(set(verdicts.values())) == 1, f"{record!r}: {verdicts}"
    matrices = [m for _, m in found.values() if m is not None]
    for matrix in matrices[1:]:
        np.testing.assert_array_equal(matrix, matrices[0], err_msg=repr(record))


class _Model:
    pipeline = PIPELINE


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=_records(FEATURES))
def test_every_path_judges_a_record_alike(record: dict[str, Any], tmp_path: Path) -> None:
    typed = json_paths(record, tmp_path)
    # Unknown fields are an error of the JSON APIs only (files have other columns): compare the
    # batch paths with the server on the record without them.
    _agree({k: v for k, v in typed.items() if not k.startswith("batch")}, record)
    batch = {k: v for k, v in typed.items() if k.startswith("batch")}
    batch["server json (features only)"] = _server(
        json.dumps({"instances": [_known(record)]}).encode(), "application/json", PIPELINE
    )
    _agree(batch, record)
    text = csv_paths(record, tmp_path, _Model())
    if text is not None:
        _agree(text, record)
        if faithful(record):
            _agree({"csv": text["server csv"], "json": batch["server json (features only)"]}, record)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=_records(NUMERIC))
def test_numeric_arrays_are_judged_as_the_same_numbers_in_json(record: dict[str, Any], tmp_path: Path) -> None:
    """An x-npy row is the record's values as float64 in manifest order (booleans as 0/1), the way
    SageMaker's NumPy serializer sends them; its JSON twin is that list of numbers."""
    values = []
    for feature in NUMERIC:
        v = record.get(feature.name)
        if v is None or isinstance(v, str | list | dict) or (isinstance(v, int) and abs(v) > 1e308):
            return  # not a number an array can hold
        values.append(float(v))
    array = np.array([values], dtype=np.float64)
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    _agree(
        {
            "x-npy": _server(out.getvalue(), "application/x-npy", NUMERIC_PIPELINE),
            "json list": _server(json.dumps({"instances": [values]}).encode(), "application/json", NUMERIC_PIPELINE),
        },
        record,
    )


class _NumericModel:
    name = "numeric"
    pipeline = NUMERIC_PIPELINE


def _verdict(call: Any) -> tuple[Verdict, np.ndarray | None]:
    """A decoder's verdict (as `_server` reads it) and, when it accepts, the model's input matrix."""
    try:
        found = call()
    except BadRequest as exc:
        detail = exc.detail
        reason = (
            exc.message.split(": ", 1)[1] if detail.get("field") or detail.get("record") is not None else exc.message
        )
        return (detail.get("field"), reason), None
    if isinstance(found, np.ndarray):  # a block: numbers then booleans, as rows hold them
        return None, NUMERIC_PIPELINE.transform_block(found, [], len(found))
    return None, NUMERIC_PIPELINE.transform(found)


def tensor_paths(values: list[Any], dtype: str) -> dict[str, tuple[Verdict, np.ndarray | None]]:
    """The tensor path (one block, no object per record): an x-npy body on /invocations, an OIP
    tensor `input` in raw bytes and as JSON data, and OIP's one-input-per-feature tensors."""
    from sagegate.server.oip import inference
    from sagegate.server.oip.tensors import from_data, from_raw

    array = np.array([values], dtype=dtype)
    datatype = {"float64": "FP64", "int64": "INT64"}[dtype]
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    model: Any = _NumericModel()
    shape = list(array.shape)
    columns = [from_data(f.name, datatype, [1], [v]) for f, v in zip(NUMERIC, array[0].tolist(), strict=True)]
    return {
        "x-npy block": _verdict(lambda: codecs.decode_block(out.getvalue(), codecs.NPY, NUMERIC_PIPELINE, 10)),
        "oip raw": _verdict(lambda: inference.block(model, from_raw("input", datatype, shape, array.tobytes()), 10)),
        "oip json": _verdict(lambda: inference.block(model, from_data("input", datatype, shape, array.tolist()), 10)),
        "oip per feature": _verdict(lambda: inference.feature_rows(model, columns, 10)),
    }


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=_records(NUMERIC))
def test_the_tensor_path_judges_as_the_record_path(record: dict[str, Any]) -> None:
    """A numeric tensor gets the verdict its records get as JSON: FP64 tensors are the record's
    values as doubles, INT64 tensors its integers exactly (2**53 + 1 stays beyond 2**53)."""
    values = []
    for feature in NUMERIC:
        v = record.get(feature.name)
        if v is None or isinstance(v, str | list | dict) or (isinstance(v, int) and abs(v) > 1e308):
            return  # not a number a tensor can hold
        values.append(v)
    doubles = [float(v) for v in values]
    found = tensor_paths(doubles, "float64")
    found["json list"] = _server(json.dumps({"instances": [doubles]}).encode(), "application/json", NUMERIC_PIPELINE)
    _agree(found, record)
    if all(isinstance(v, int) and -(2**63) <= v < 2**63 for v in values):
        exact = [int(v) for v in values]
        found = tensor_paths(exact, "int64")
        found["json list"] = _server(json.dumps({"instances": [exact]}).encode(), "application/json", NUMERIC_PIPELINE)
        _agree(found, record)


@pytest.mark.parametrize(
    ("record", "field", "reason"),
    [
        (
            {"amount": 10**400, "hour": 1, "channel": "web"},
            "amount",
            "must be a finite number (not NaN or infinite, nor beyond a float's range)",
        ),
        (
            {"amount": 1.0, "hour": 2**53 + 1, "channel": "web"},  # rounds to 2**53 as a double
            "hour",
            "is beyond +-2**53, the integers a float holds exactly",
        ),
        (
            {"amount": 1.0, "hour": 2**60, "channel": "web"},
            "hour",
            "is beyond +-2**53, the integers a float holds exactly",
        ),
        (
            {"amount": 1.0, "hour": 1, "score": 1e300, "channel": "web"},
            "score",
            "is beyond the range of the model's float32 input",
        ),
        ({"amount": 1.0, "hour": 1, "channel": "\ud800"}, "channel", "is not valid Unicode text (a lone surrogate)"),
        ({"amount": 1.0, "hour": 1, "channel": 2134}, "channel", "expected a string, got int"),
        ({"amount": "12.5", "hour": 1, "channel": "web"}, "amount", "expected a number, got str"),
    ],
)
def test_edge_values_are_refused_alike_with_the_same_reason(
    record: dict[str, Any], field: str, reason: str, tmp_path: Path
) -> None:
    found = json_paths(record, tmp_path)
    for path, (verdict, _) in found.items():
        assert verdict == (field, reason), path


def test_a_csv_keeps_leading_zeros_of_a_category(tmp_path: Path) -> None:
    """ "02134" is a category, not the number 2134, in a CSV as in JSON."""
    (tmp_path / "zip.csv").write_text("amount,hour,channel\n1.5,3,02134\n")
    (chunk,) = list(_chunks(_Model(), tmp_path / "zip.csv", 10, [], lambda i: False))
    assert chunk.batch is not None and chunk.batch.errors == []
    expected = PIPELINE.transform(PIPELINE.rows_from_records([{"amount": 1.5, "hour": 3, "channel": "02134"}]))
    np.testing.assert_array_equal(chunk.batch.matrix, expected)
    assert math.isfinite(float(chunk.batch.matrix.sum()))
