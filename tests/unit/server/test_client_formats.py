"""What SageMaker's own clients send to an endpoint, and bodies built to hurt the server: each is
read as what it means, or refused with a 4xx naming the record and field."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest

from sagegate.features import FeaturePipeline
from sagegate.manifest import Feature
from sagegate.server import codecs
from sagegate.server.exceptions import BadRequest, PayloadTooLarge

NUMERIC = FeaturePipeline(
    [Feature(name="a", type="float"), Feature(name="b", type="bool"), Feature(name="n", type="int", minimum=0)]
)
MIXED = FeaturePipeline(
    [
        Feature(name="a", type="float"),
        Feature(name="c", type="categorical", categories=["u", "v"], transforms=[{"kind": "one_hot"}]),
    ]
)


def test_lists_in_instances_and_bare_arrays_are_records_in_manifest_order() -> None:
    """The SageMaker SDK's JSONSerializer sends an array (or a list of lists) as it is."""
    expected = NUMERIC.rows_from_records([{"a": 1.5, "b": True, "n": 3}, {"a": 0.0, "b": False, "n": 2}])
    assert codecs.decode(b'{"instances": [[1.5, 1, 3], [0, 0, 2]]}', "application/json", NUMERIC, 10) == expected
    assert codecs.decode(b"[[1.5, 1, 3], [0, 0, 2]]", "application/json", NUMERIC, 10) == expected
    assert codecs.decode(b"[1.5, 1, 3]", "application/json", NUMERIC, 10) == expected[:1]
    assert codecs.decode(b'[[1.5, "v"]]', "application/json", MIXED, 10) == MIXED.rows_from_records(
        [{"a": 1.5, "c": "v"}]
    )
    with pytest.raises(BadRequest, match="record 1: expected a list of 3 values, got 2"):
        codecs.decode(b"[[1.5, 1, 3], [0, 0]]", "application/json", NUMERIC, 10)
    with pytest.raises(BadRequest, match="record 0, field 'n': -1 is below the minimum 0"):
        codecs.decode(b"[[1.5, 1, -1]]", "application/json", NUMERIC, 10)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("text/csv;q=0.5, application/json", "application/json"),
        ("application/json;q=0.2, text/csv;q=0.9", "text/csv"),
        ("application/jsonlines;q=0, application/json;q=0.1", "application/json"),
        ("*/*;q=0.8, text/csv", "text/csv"),
        ("image/png, application/json;q=0.5", "application/json"),
    ],
)
def test_accept_is_read_by_its_quality_values(accept: str, expected: str) -> None:
    assert codecs.media_type(accept, "application/json") == expected


def test_accept_of_only_unknown_or_refused_types_is_406_not_acceptable() -> None:
    from sagegate.server.exceptions import NotAcceptable

    assert codecs.media_type("image/png", "application/json") is None
    assert codecs.media_type("application/json;q=0", "text/csv") is None
    for accept in ("image/png", "application/json;q=0, text/csv;q=0", "application/x-npy"):
        with pytest.raises(NotAcceptable) as refused:
            codecs.answer_type(accept, "application/json")
        assert refused.value.status == 406
    # wildcards: text/* is CSV, the one text type answered; application/* the request's own family
    assert codecs.answer_type("text/*", "application/json") == "text/csv"
    assert codecs.answer_type("application/*", "application/jsonlines") == "application/jsonlines"


def _npy_with_header(shape: tuple[int, ...], payload: bytes = b"") -> bytes:
    header = ("{'descr': '<f8', 'fortran_order': False, 'shape': " + repr(shape) + ", }").encode("latin-1")
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload


def test_an_npy_header_declaring_a_huge_shape_is_refused_before_anything_is_allocated() -> None:
    with pytest.raises(PayloadTooLarge, match="10000000000 records"):
        codecs.decode(_npy_with_header((10**10, 3)), "application/x-npy", NUMERIC, 100)
    with pytest.raises(BadRequest, match="declares 2400 bytes of data; the body has 8"):
        codecs.decode(_npy_with_header((100, 3), b"\x00" * 8), "application/x-npy", NUMERIC, 100)
    out = io.BytesIO()
    np.save(out, np.array([[1.0, 1.0, 2.0]]))
    assert len(codecs.decode(out.getvalue(), "application/x-npy", NUMERIC, 100)) == 1


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (
            b'{"instances": [{"a": 1' + b"0" * 400 + b', "b": true, "n": 1}]}',
            "a",
            "must be a finite number (not NaN or infinite, nor beyond a float's range)",
        ),
        (
            b'{"instances": [{"a": 1e400, "b": true, "n": 1}]}',
            "a",
            "must be a finite number (not NaN or infinite, nor beyond a float's range)",
        ),
        (b'{"instances": [{"a": 1, "b": true, "n": 123456789012345678901234}]}', "n", "is beyond +-2**53"),
    ],
)
def test_numbers_orjson_cannot_hold_are_judged_by_the_rules_not_refused_as_json(
    body: bytes, field: str, reason: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        codecs.decode(body, "application/json", NUMERIC, 10)
    assert caught.value.detail["field"] == field and reason in caught.value.message


def test_a_lone_surrogate_is_a_field_error() -> None:
    with pytest.raises(BadRequest) as caught:
        codecs.decode(b'{"instances": [{"a": 1, "c": "\\ud800"}]}', "application/json", MIXED, 10)
    assert caught.value.detail["field"] == "c" and "lone surrogate" in caught.value.message


def test_an_empty_array_is_no_records_as_an_empty_list_is() -> None:
    out = io.BytesIO()
    np.save(out, np.zeros((0, 3)))
    with pytest.raises(BadRequest, match=r"no records in the array \(its shape is \(0, 3\)\)"):
        codecs.decode(out.getvalue(), "application/x-npy", NUMERIC, 100)
    with pytest.raises(BadRequest, match="no records in the request"):
        codecs.decode(b'{"instances": []}', "application/json", NUMERIC, 100)


@pytest.mark.parametrize(
    "body",
    [b'{"instances": [[1.5, 1, 2]], "features": {"a": 9}}', b'{"features": {"a": 1, "b": 1, "n": 1}, "instance": []}'],
)
def test_a_key_beside_instances_or_features_is_refused_not_ignored(body: bytes) -> None:
    with pytest.raises(BadRequest, match="unexpected key"):
        codecs.decode(body, "application/json", NUMERIC, 100)


def test_bodies_that_are_not_what_they_say_get_a_message_about_the_body() -> None:
    # a header whose dict calls a function: refused by what it is, not by Python's parser's words
    header = b"{'descr': __import__('os').getpid(), 'fortran_order': False, 'shape': (1, 3), }"
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    hostile = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header
    with pytest.raises(BadRequest) as refused:
        codecs.decode(hostile, "application/x-npy", NUMERIC, 100)
    assert "header is not a literal" in str(refused.value) and "ast" not in str(refused.value)
    # a matrix of the wrong width is the array's fault, not "record 0"
    out = io.BytesIO()
    np.save(out, np.zeros((2, 5)))
    with pytest.raises(BadRequest, match=r"shape \(records, 3\), one column per feature, got \(2, 5\)") as wide:
        codecs.decode(out.getvalue(), "application/x-npy", NUMERIC, 100)
    assert "record" not in str(wide.value).split("(records")[0]
    # bytes that are not UTF-8
    with pytest.raises(BadRequest, match=r"the body is not UTF-8 text \(byte 0\)"):
        codecs.decode(b'\xff{"features": {}}', "application/json", NUMERIC, 100)
