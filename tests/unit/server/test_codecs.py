from __future__ import annotations

import orjson
import pytest

from sagegate.features import FeaturePipeline
from sagegate.manifest import Feature
from sagegate.server import codecs
from sagegate.server.exceptions import BadRequest, PayloadTooLarge, UnsupportedMediaType

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
    with pytest.raises(UnsupportedMediaType, match="cannot answer in 'image/png'"):
        codecs.encode(PREDICTIONS, "image/png", "application/json")
