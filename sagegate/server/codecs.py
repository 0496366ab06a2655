"""Request bodies to validated rows, predictions to response bodies, per content type."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from sagegate.features import ArrayShapeError, FeaturePipeline, RecordError, Row
from sagegate.server.exceptions import BadRequest, NotAcceptable, PayloadTooLarge, UnsupportedMediaType
from sagegate.server.model import Prediction

__all__ = ["CSV", "JSON", "JSONLINES", "decode", "decode_block", "encode", "media_type"]

JSON = "application/json"
JSONLINES = "application/jsonlines"
CSV = "text/csv"
NPY = "application/x-npy"
_ALIASES = {
    NPY: NPY,
    JSON: JSON,
    JSONLINES: JSONLINES,
    "application/jsonl": JSONLINES,
    "application/x-jsonlines": JSONLINES,
    "application/json-lines": JSONLINES,
    CSV: CSV,
}


def _quality(part: str) -> float:
    for parameter in part.split(";")[1:]:
        key, _, value = parameter.strip().partition("=")
        if key.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def media_type(header: str | None, default: str | None = None) -> str | None:
    """The canonical media type of a Content-Type/Accept value: the acceptable entry of the highest
    quality (`q`), the first of equals; q=0 means "not this one"."""
    if not header:
        return default
    ranked = sorted(
        ((-_quality(part), i, part.split(";", 1)[0].strip().lower()) for i, part in enumerate(header.split(","))),
    )
    for negative_q, _, base in ranked:
        if negative_q >= 0:
            continue
        if base in _ALIASES:
            return _ALIASES[base]
        if base in ("*/*", "application/*", ""):
            return default
        if base == "text/*":
            return CSV  # the one text type there is
    return None


def decode(body: bytes, content_type: str | None, pipeline: FeaturePipeline, max_records: int) -> list[Row]:
    kind = media_type(content_type, JSON)
    if kind is None:
        raise UnsupportedMediaType(
            f"unsupported Content-Type {content_type!r}: use {JSON}, {JSONLINES}, {CSV} or {NPY}"
        )
    if not body.strip():
        raise BadRequest("the request body is empty")
    try:
        if kind == JSON:
            return pipeline.rows_from_records(_json_records(body, max_records))
        if kind == NPY:
            return _npy_rows(body, pipeline, max_records)
        if kind == JSONLINES:
            return pipeline.rows_from_records(_jsonlines_records(body, max_records))
        header, cells = _csv_cells(body, pipeline, max_records)
        return pipeline.rows_from_text(header, cells)
    except RecordError as exc:
        raise BadRequest(str(exc), record=exc.record, field=exc.field) from None


def _npy_header(body: bytes, max_records: int) -> None:
    """The array's declared shape and type, checked before anything is allocated for it: a header
    may declare any shape, and np.load would make room for it first."""
    from numpy.lib import format as npy

    stream = io.BytesIO(body)
    try:
        version = npy.read_magic(stream)
        reader = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, _, dtype = reader(stream)
    except (ValueError, OSError, EOFError) as exc:
        said = str(exc).splitlines()[0]
        if "ast." in said or "malformed node" in said:  # the header's dict is not a plain literal
            said = "its header is not a literal {'descr', 'fortran_order', 'shape'} dict"
        raise BadRequest(f"the body is not a NumPy .npy array: {said}") from None
    if dtype.hasobject:
        raise BadRequest("the body is not a NumPy .npy array of numbers: it holds Python objects (never unpickled)")
    _too_many(shape[0] if len(shape) > 1 else 1, max_records)
    declared = dtype.itemsize * math.prod(shape)
    if declared > len(body) - stream.tell():
        raise BadRequest(f"the .npy header declares {declared} bytes of data; the body has {len(body) - stream.tell()}")


def decode_block(
    body: bytes, content_type: str | None, pipeline: FeaturePipeline, max_records: int
) -> np.ndarray | None:
    """An application/x-npy body for a model whose features are all numeric, validated as one block
    (`FeaturePipeline.block_from_array`: the same checks and messages as `decode`); None for any
    other body, which `decode` takes."""
    if media_type(content_type, JSON) != NPY or pipeline.categorical_features:
        return None
    if not body.strip():
        raise BadRequest("the request body is empty")
    array = _npy_array(body, max_records)
    try:
        return pipeline.block_from_array(array)
    except RecordError as exc:
        raise BadRequest(str(exc), record=exc.record, field=exc.field) from None
    except ArrayShapeError as exc:
        raise BadRequest(f"{NPY}: {exc}") from None


def _npy_rows(body: bytes, pipeline: FeaturePipeline, max_records: int) -> list[Row]:
    array = _npy_array(body, max_records)
    try:
        return pipeline.rows_from_array(array)
    except RecordError:
        raise
    except ArrayShapeError as exc:
        raise BadRequest(f"{NPY}: {exc}") from None
    except ValueError as exc:
        raise UnsupportedMediaType(f"{NPY}: {exc}") from None


def _npy_array(body: bytes, max_records: int) -> np.ndarray:
    _npy_header(body, max_records)
    try:
        array = np.load(io.BytesIO(body), allow_pickle=False)  # never unpickle a request
    except (ValueError, OSError, EOFError) as exc:
        raise BadRequest(f"the body is not a NumPy .npy array: {str(exc).splitlines()[0]}") from None
    if not isinstance(array, np.ndarray):
        raise BadRequest("the body is not a NumPy .npy array")
    if array.ndim >= 1 and array.shape[0] == 0:
        raise BadRequest("no records in the array (its shape is " + repr(array.shape) + ")")
    return array


def _too_many(count: int, max_records: int) -> None:
    if count > max_records:
        raise PayloadTooLarge(f"{count} records in one request; the limit is {max_records}")


def load_json(body: bytes, what: str = "the body is") -> Any:
    """A JSON document: orjson, and for what it refuses but JSON allows (numbers beyond a double,
    escaped lone surrogates) the standard library, so the features' rules name the field."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise BadRequest(f"{what} not UTF-8 text (byte {bad.start})") from None
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            raise BadRequest(f"{what} not valid JSON: {exc}") from None


def _json_records(body: bytes, max_records: int) -> list[Any]:
    document = load_json(body)
    if isinstance(document, list) and document and not isinstance(document[0], dict | list):
        document = [document]  # one record as a bare list of values
    if isinstance(document, dict) and ("instances" in document or "features" in document):
        key = "instances" if "instances" in document else "features"
        others = sorted(set(document) - {key})
        if others:  # {"instances": [...], "features": {...}}: which one did the client mean?
            raise BadRequest(
                f"unexpected key {others[0]!r} beside {key!r}: the body is {{{key!r}: ...}} alone", field=others[0]
            )
    if isinstance(document, dict) and "instances" in document:
        records = document["instances"]
        if not isinstance(records, list):
            raise BadRequest("'instances' must be a list of records", field="instances")
    elif isinstance(document, dict) and "features" in document:
        records = [document["features"]]
    elif isinstance(document, list):
        records = document
    else:
        raise BadRequest('expected {"instances": [{...}, ...]} or {"features": {...}}')
    if not records:
        raise BadRequest("no records in the request", field="instances")
    _too_many(len(records), max_records)
    return records


def _jsonlines_records(body: bytes, max_records: int) -> list[Any]:
    lines = [line for line in body.splitlines() if line.strip()]
    _too_many(len(lines), max_records)
    records = []
    for index, line in enumerate(lines):
        try:
            record = load_json(line, f"record {index}:")
        except BadRequest as exc:
            raise BadRequest(exc.message, record=index) from None
        if isinstance(record, dict) and set(record) == {"features"}:
            record = record["features"]
        records.append(record)
    return records


def _csv_cells(body: bytes, pipeline: FeaturePipeline, max_records: int) -> tuple[list[str] | None, list[list[str]]]:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("the CSV body is not UTF-8") from None
    try:
        rows = [row for row in csv.reader(io.StringIO(text), strict=True) if row]
    except csv.Error as exc:
        raise BadRequest(f"malformed CSV: {exc}") from None
    header = None
    if rows and any(cell.strip() in pipeline.names for cell in rows[0]):
        header = [cell.strip() for cell in rows.pop(0)]
    if not rows:
        raise BadRequest("no records in the CSV body")
    _too_many(len(rows), max_records)
    return header, rows


def answer_type(accept: str | None, content_type: str | None) -> str:
    """The type to answer in: the Accept header's choice, defaulting to the request's own format
    family; 406 (before any work) when nothing the server writes is acceptable."""
    same = media_type(content_type, JSON) or JSON
    kind = media_type(accept, JSON if same == NPY else same)
    if kind is None or kind == NPY:
        raise NotAcceptable(f"cannot answer in {accept!r}: accept {JSON}, {JSONLINES} or {CSV}", field="Accept")
    return kind


def encode(predictions: Sequence[Prediction], accept: str | None, content_type: str | None) -> tuple[bytes, str]:
    """The response body in the Accept type, defaulting to the request's own format family."""
    kind = answer_type(accept, content_type)
    if kind == JSON:
        return orjson.dumps({"predictions": predictions}), JSON
    if kind == JSONLINES:
        return b"\n".join(orjson.dumps(p) for p in predictions) + b"\n", JSONLINES
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for p in predictions:
        writer.writerow(
            [
                p["prediction"],
                "" if p["label"] is None else p["label"],
                "" if p["confidence"] is None else p["confidence"],
            ]
        )
    return out.getvalue().encode(), CSV
