from __future__ import annotations

import orjson
import pytest

from sagegate.features import FeaturePipeline
from sagegate.manifest import Feature
from sagegate.server import codecs
from sagegate.server.exceptions import BadRequest, NotAcceptable, PayloadTooLarge, UnsupportedMediaType

PIPELINE = FeaturePipeline(
    [
        Feature(name="a", type="float"),
        Feature(name="c", type="categorical", categories=["u", "v"], transforms=[{"kind": "one_hot"}]),
    ]
)


def decode(body: bytes, content_type: str | None, max_records: int = 100) -> list:  # type: ignore[type-arg]
    return codecs.decode(body, content_type, PIPELINE, max_records)


def test_every_content_type_decodes_to_the_same_rows() -> None:
    expected = PIPELINE.rows_from_records([{"a": 1.0, "c": "u"}, {"a": 2.5, "c": "v"}])
    assert decode(b'{"instances": [{"a": 1, "c": "u"}, {"a": 2.5, "c": "v"}]}', "application/json") == expected
    assert decode(b'[{"a": 1, "c": "u"}, {"a": 2.5, "c": "v"}]', None) == expected
    assert decode(b'{"a": 1, "c": "u"}\n\n{"features": {"a": 2.5, "c": "v"}}\n', "application/jsonlines") == expected
    assert decode(b"a,c\n1,u\n2.5,v\n", "text/csv; charset=utf-8") == expected
    assert decode(b"1,u\r\n2.5,v\r\n", "text/csv") == expected
    assert decode(b'{"features": {"a": 1, "c": "u"}}', "application/json") == expected[:1]


@pytest.mark.parametrize(
    ("body", "content_type", "error", "message"),
    [
        (b"{not json", "application/json", BadRequest, "not valid JSON"),
        (b'{"instances": 3}', "application/json", BadRequest, "'instances' must be a list"),
        (b'{"instances": []}', "application/json", BadRequest, "no records"),
        (b'{"rows": []}', "application/json", BadRequest, 'expected {"instances"'),
        (b"", "application/json", BadRequest, "empty"),
        (b'{"a": 1}\n{oops', "application/jsonlines", BadRequest, "record 1: not valid JSON"),
        (b'a,c\n1,"u\n', "text/csv", BadRequest, "malformed CSV"),
        (b"a,c\n", "text/csv", BadRequest, "no records"),
        (b"\xff\xfe", "text/csv", BadRequest, "not UTF-8"),
        (b"<a/>", "application/xml", UnsupportedMediaType, "unsupported Content-Type"),
        (orjson.dumps([{"a": 1, "c": "u"}] * 101), "application/json", PayloadTooLarge, "101 records"),
        (b'[{"a": 1, "c": "u"}, {"a": "x", "c": "u"}]', "application/json", BadRequest, "record 1, field 'a'"),
    ],
)
def test_bad_bodies(body: bytes, content_type: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        decode(body, content_type)


def test_validation_errors_carry_record_and_field() -> None:
    with pytest.raises(BadRequest) as caught:
        decode(b"a,c\n1,u\n2,w\n", "text/csv")
    assert caught.value.detail == {"record": 1, "field": "c"}


PREDICTIONS = [
    {"prediction": 0.9, "label": "yes", "confidence": 0.9},
    {"prediction": 1.5, "label": None, "confidence": None},
]


def test_answers_follow_accept_else_the_request_format() -> None:
    body, media = codecs.encode(PREDICTIONS, None, "application/json")
    assert (media, orjson.loads(body)) == ("application/json", {"predictions": PREDICTIONS})
    body, media = codecs.encode(PREDICTIONS, "*/*", "application/jsonlines")
    assert media == "application/jsonlines"
    assert [orjson.loads(line) for line in body.splitlines()] == PREDICTIONS
    body, media = codecs.encode(PREDICTIONS, "text/csv", "application/json")
    assert (media, body) == ("text/csv", b"0.9,yes,0.9\n1.5,,\n")
    with pytest.raises(NotAcceptable, match="cannot answer in 'image/png'"):
        codecs.encode(PREDICTIONS, "image/png", "application/json")


def npy(array: object) -> bytes:
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


NUMERIC = FeaturePipeline(
    [
        Feature(name="a", type="float", minimum=0),
        Feature(name="flag", type="bool"),
        Feature(name="n", type="int"),
    ]
)


def test_npy_bodies_decode_like_json() -> None:
    import numpy as np

    records = [{"a": 1.5, "flag": True, "n": 3}, {"a": 0.0, "flag": False, "n": -2}]
    array = np.array([[1.5, 1, 3], [0.0, 0, -2]], dtype=np.float32)
    rows = codecs.decode(npy(array), "application/x-npy", NUMERIC, 10)
    np.testing.assert_array_equal(NUMERIC.transform(rows), NUMERIC.transform_records(records))
    single = codecs.decode(npy(array[0]), "application/x-npy", NUMERIC, 10)
    np.testing.assert_array_equal(NUMERIC.transform(single), NUMERIC.transform_records(records[:1]))
    _, media = codecs.encode(PREDICTIONS, None, "application/x-npy")
    assert media == "application/json"


@pytest.mark.parametrize(
    ("array", "error", "message"),
    [
        ([[1.0, 1, 2], [-1.0, 0, 2]], BadRequest, "record 1, field 'a': -1 is below the minimum 0"),
        ([[1.0, 2, 2]], BadRequest, "field 'flag': expected a boolean"),
        ([[1.0, 1, 2.5]], BadRequest, "field 'n': expected an integer, got 2.5"),
        ([[float("nan"), 1, 2]], BadRequest, "field 'a': must be a finite number"),
        ([[1.0, 1]], BadRequest, "expected an array of shape (records, 3)"),
        ([["x", "y", "z"]], BadRequest, "expected a numeric array"),
        ([[1.0, 1, 2]] * 11, PayloadTooLarge, "11 records"),
    ],
)
def test_bad_npy_bodies(array: list, error: type[Exception], message: str) -> None:  # type: ignore[type-arg]
    import numpy as np

    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        codecs.decode(npy(np.array(array)), "application/x-npy", NUMERIC, 10)


def test_npy_refuses_pickles_and_categorical_models() -> None:
    import numpy as np

    with pytest.raises(BadRequest, match=r"not a NumPy \.npy array"):
        codecs.decode(npy(np.array([{"a": 1}], dtype=object)), "application/x-npy", NUMERIC, 10)
    with pytest.raises(BadRequest, match=r"not a NumPy \.npy array"):
        codecs.decode(b"garbage", "application/x-npy", NUMERIC, 10)
    with pytest.raises(UnsupportedMediaType, match="only carry numeric features; this model has c"):
        codecs.decode(npy(np.array([[1.0, 0.0]])), "application/x-npy", PIPELINE, 10)
