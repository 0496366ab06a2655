"""OIP tensors: every wire form round-trips, and every malformed tensor is a BadRequest naming it."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from sagegate.server.exceptions import BadRequest
from sagegate.server.oip.tensors import DATATYPES, coded_bytes, from_data, from_raw, to_raw, wire_data


@pytest.mark.parametrize("datatype", [d for d in DATATYPES if d != "BYTES"])
def test_numbers_round_trip_through_raw_and_json(datatype: str) -> None:
    values = np.array([[0, 1, 1], [1, 0, 1]]).astype(DATATYPES[datatype])
    raw = from_raw("x", datatype, [2, 3], values.tobytes())
    np.testing.assert_array_equal(raw.data, values)
    assert to_raw(raw) == values.tobytes()
    as_json = from_data("x", datatype, [2, 3], wire_data(raw))
    np.testing.assert_array_equal(as_json.data, values)
    nested = from_data("x", datatype, [2, 3], values.tolist())
    np.testing.assert_array_equal(nested.data, values)


def test_bytes_are_length_prefixed_little_endian() -> None:
    tensor = from_data("t", "BYTES", [3], ["web", "", "café"])
    raw = to_raw(tensor)
    assert raw[:7] == struct.pack("<I", 3) + b"web"
    back = from_raw("t", "BYTES", [3], raw)
    assert back.data.tolist() == [b"web", b"", "café".encode()]
    assert wire_data(back) == ["web", "", "café"]
    labels = coded_bytes("label", np.array([1, 0, 1]), ["legit", "fraud"])
    assert to_raw(labels) == to_raw(from_data("label", "BYTES", [3], ["fraud", "legit", "fraud"]))


@pytest.mark.parametrize(
    ("datatype", "shape", "data", "says"),
    [
        ("FP32", [2, 2], [1.0, 2.0, 3.0], "holds 4 elements, the data has 3"),
        ("FP32", [1], ["a"], "must be numbers"),
        ("FP32", [1], [1e300], "beyond the range of FP32"),
        ("INT64", [1], [1.5], "must be integers"),
        ("INT8", [1], [300], "beyond the range of INT8"),
        ("BOOL", [1], [1], "true or false"),
        ("BYTES", [1], [1], "must be strings"),
        ("BF16", [1], [1.0], "unsupported datatype"),
        ("FP32", [-1], [], "integers >= 0"),
        ("FP32", "2", [], "list of integers"),
        ("FP32", [1], [[1.0], {"a": 1}], "numbers, booleans or strings"),
        ("FP32", [1], 1.0, "must be a list"),
    ],
)
def test_malformed_json_tensors_are_bad_requests(datatype: str, shape: object, data: object, says: str) -> None:
    with pytest.raises(BadRequest, match=says) as caught:
        from_data("x", datatype, shape, data)
    assert "'x'" in caught.value.message


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "says"),
    [
        ("FP32", [2], b"\0" * 4, "is 8 bytes, got 4"),
        ("BYTES", [1], b"\x05\0", "cut short"),
        ("BYTES", [1], struct.pack("<I", 9) + b"abc", "runs past the data"),
        ("BYTES", [2], struct.pack("<I", 1) + b"a", "holds 2 elements, the data has 1"),
    ],
)
def test_malformed_raw_tensors_are_bad_requests(datatype: str, shape: list[int], raw: bytes, says: str) -> None:
    with pytest.raises(BadRequest, match=says):
        from_raw("x", datatype, shape, raw)
