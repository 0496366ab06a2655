from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sagegate.features import FeaturePipeline, RecordError
from sagegate.manifest import Feature

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
positive = st.floats(min_value=0, max_value=1e6, allow_nan=False)


def pipeline(*specs: dict[str, Any]) -> FeaturePipeline:
    return FeaturePipeline([Feature.model_validate(s) for s in specs])


@settings(max_examples=50, deadline=None)
@given(st.lists(finite, min_size=1, max_size=40), finite, st.floats(min_value=1e-3, max_value=1e3))
def test_standardize_is_affine(values: list[float], mean: float, std: float) -> None:
    p = pipeline({"name": "x", "type": "float", "transforms": [{"kind": "standardize", "mean": mean, "std": std}]})
    out = p.transform_records([{"x": v} for v in values])
    expected = (np.array(values) - mean) / std
    np.testing.assert_allclose(out[:, 0], expected.astype(np.float32), rtol=1e-5, atol=1e-6 * (1 + abs(mean) / std))


@settings(max_examples=50, deadline=None)
@given(st.lists(finite, min_size=1, max_size=40), st.floats(-1e3, 1e3), st.floats(1e-2, 1e3))
def test_min_max_maps_the_range_to_unit_interval(values: list[float], low: float, span: float) -> None:
    p = pipeline({"name": "x", "type": "float", "transforms": [{"kind": "min_max", "min": low, "max": low + span}]})
    out = p.transform_records([{"x": v} for v in values])[:, 0]
    np.testing.assert_allclose(out, ((np.array(values) - low) / span).astype(np.float32), rtol=1e-5, atol=1e-5)
    edges = p.transform_records([{"x": low}, {"x": low + span}])[:, 0]
    np.testing.assert_allclose(edges, [0.0, 1.0], atol=1e-5)


@settings(max_examples=50, deadline=None)
@given(st.lists(positive, min_size=1, max_size=40))
def test_log1p_then_standardize_compose_in_order(values: list[float]) -> None:
    p = pipeline(
        {
            "name": "x",
            "type": "float",
            "minimum": 0,
            "transforms": [{"kind": "log1p"}, {"kind": "standardize", "mean": 2.0, "std": 3.0}],
        }
    )
    out = p.transform_records([{"x": v} for v in values])[:, 0]
    np.testing.assert_allclose(out, ((np.log1p(values) - 2.0) / 3.0).astype(np.float32), rtol=1e-5, atol=1e-6)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(st.none(), finite), min_size=1, max_size=40), finite)
def test_impute_fills_missing_values_only(values: list[float | None], fill: float) -> None:
    p = pipeline({"name": "x", "type": "float", "required": False, "transforms": [{"kind": "impute", "value": fill}]})
    records = [{"x": v} if v is not None else {} for v in values]
    out = p.transform_records(records)[:, 0]
    expected = np.array([fill if v is None else v for v in values], dtype=np.float32)
    np.testing.assert_array_equal(out, expected)


categories = ["a", "b", "c", "d"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from([*categories, "zz"]), min_size=1, max_size=40))
def test_one_hot_sets_exactly_the_category_column(values: list[str]) -> None:
    p = pipeline({"name": "s", "type": "string", "transforms": [{"kind": "one_hot", "categories": categories}]})
    out = p.transform_records([{"s": v} for v in values])
    assert out.shape == (len(values), len(categories))
    for row, value in zip(out, values, strict=True):
        expected = np.zeros(len(categories), dtype=np.float32)
        if value in categories:
            expected[categories.index(value)] = 1
        np.testing.assert_array_equal(row, expected)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from([*categories, "zz"]), min_size=1, max_size=40), st.floats(-10, -1))
def test_ordinal_is_the_category_index(values: list[str], unknown: float) -> None:
    p = pipeline(
        {
            "name": "s",
            "type": "string",
            "transforms": [{"kind": "ordinal", "categories": categories, "unknown_value": unknown}],
        }
    )
    out = p.transform_records([{"s": v} for v in values])[:, 0]
    expected = [categories.index(v) if v in categories else unknown for v in values]
    np.testing.assert_allclose(out, expected)


def test_columns_follow_manifest_order_with_mixed_types() -> None:
    p = pipeline(
        {"name": "cat", "type": "categorical", "categories": ["x", "y"], "transforms": [{"kind": "one_hot"}]},
        {"name": "n", "type": "int"},
        {"name": "flag", "type": "bool", "required": False, "default": False},
        {
            "name": "color",
            "type": "categorical",
            "categories": ["r", "g"],
            "required": False,
            "transforms": [{"kind": "impute", "value": "g"}, {"kind": "ordinal"}],
        },
    )
    out = p.transform_records([{"cat": "y", "n": 7, "flag": True, "color": "r"}, {"cat": "x", "n": -2}])
    np.testing.assert_array_equal(out, [[0, 1, 7, 1, 0], [1, 0, -2, 0, 1]])
    assert p.width == 5


@pytest.mark.parametrize(
    ("record", "field", "reason"),
    [
        ({"amount": "12"}, "amount", "expected a number, got str"),
        ({"amount": True}, "amount", "expected a number, got bool"),
        ({"amount": -1.0}, "amount", "below the minimum 0"),
        ({"amount": 1e9}, "amount", "above the maximum 1000000"),
        ({"amount": math.inf}, "amount", "finite"),
        ({}, "amount", "is required"),
        ({"amount": 1.0, "count": 1.5}, "count", "expected an integer, got 1.5"),
        ({"amount": 1.0, "channel": "fax"}, "channel", "'fax' is not one of the categories"),
        ({"amount": 1.0, "channel": 3}, "channel", "expected a string, got int"),
        ({"amount": 1.0, "flag": 2}, "flag", "expected a boolean (true, false, 0 or 1), got 2"),
        ({"amount": 1.0, "colour": "red"}, "colour", "is not a feature of this model"),
    ],
)
def test_bad_records_name_the_record_and_field(record: dict[str, Any], field: str, reason: str) -> None:
    p = pipeline(
        {"name": "amount", "type": "float", "minimum": 0, "maximum": 1e6},
        {"name": "count", "type": "int", "required": False, "default": 0},
        {
            "name": "channel",
            "type": "categorical",
            "categories": ["web", "pos"],
            "required": False,
            "default": "web",
            "transforms": [{"kind": "one_hot"}],
        },
        {"name": "flag", "type": "bool", "required": False, "default": False},
    )
    good = {"amount": 1.0}
    with pytest.raises(RecordError) as caught:
        p.rows_from_records([good, good, record])
    assert caught.value.record == 2
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_text_rows_parse_like_json_records() -> None:
    p = pipeline(
        {"name": "a", "type": "float"},
        {"name": "b", "type": "bool", "required": False, "default": True},
        {"name": "c", "type": "categorical", "categories": ["u", "v"], "transforms": [{"kind": "one_hot"}]},
    )
    from_json = p.transform_records([{"a": 1.5, "b": False, "c": "v"}, {"a": 2.0, "c": "u"}])
    with_header = p.transform(p.rows_from_text(["c", "b", "a"], [["v", "false", "1.5"], ["u", "", "2"]]))
    without_header = p.transform(p.rows_from_text(None, [["1.5", "0", "v"], ["2", "", "u"]]))
    np.testing.assert_array_equal(from_json, with_header)
    np.testing.assert_array_equal(from_json, without_header)
    with pytest.raises(RecordError, match="record 1, field 'a': expected a number, got 'x'"):
        p.rows_from_text(None, [["1", "1", "u"], ["x", "1", "u"]])
    with pytest.raises(RecordError, match="expected 3 columns, got 2"):
        p.rows_from_text(None, [["1", "1"]])
    with pytest.raises(RecordError, match="field 'd': is not a feature"):
        p.rows_from_text(["a", "d"], [["1", "2"]])


FRAUD_LIKE = [
    {"name": "amount", "type": "float", "minimum": 0, "maximum": 1e6},
    {"name": "count", "type": "int", "minimum": 0},
    {"name": "flag", "type": "bool"},
    {"name": "channel", "type": "categorical", "categories": ["web", "pos"], "transforms": [{"kind": "one_hot"}]},
    {"name": "city", "type": "string", "transforms": [{"kind": "ordinal", "categories": ["paris", "rome"]}]},
]
values = {
    "amount": st.one_of(st.floats(0, 1e6), st.floats(allow_nan=True), st.integers(-5, 10), st.booleans(), st.text()),
    "count": st.one_of(st.integers(-3, 100), st.floats(0, 5), st.booleans()),
    "flag": st.one_of(st.booleans(), st.integers(0, 1)),
    "channel": st.one_of(st.sampled_from(["web", "pos", "fax"]), st.integers()),
    "city": st.one_of(st.text(max_size=5), st.none()),
}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.fixed_dictionaries(values), min_size=1, max_size=5))
def test_the_fast_path_accepts_and_refuses_exactly_what_the_checked_path_does(records: list[dict[str, Any]]) -> None:
    assert_fast_path_agrees(pipeline(*FRAUD_LIKE), records)


def assert_fast_path_agrees(p: FeaturePipeline, records: list[dict[str, Any]]) -> None:
    """`rows_from_records` (the fast path first) refuses what the record-by-record checks refuse,
    naming the same record and field, and gives the same model input for the rest."""
    try:
        expected = p._rows_one_by_one(records, 0)
    except RecordError as exc:
        with pytest.raises(RecordError) as caught:
            p.rows_from_records(records)
        assert (caught.value.record, caught.value.field) == (exc.record, exc.field)
        return
    got = p.rows_from_records(records)
    np.testing.assert_array_equal(p.transform(got), p.transform(expected))


def test_no_records_are_no_rows() -> None:
    """The fast path's range check over no records (a numpy broadcast of (0,) against the bounds
    raised ValueError) answers no rows, as the record-by-record path does."""
    from sagegate.local.data import fraud_features, generate_transactions

    pipeline = FeaturePipeline(fraud_features(generate_transactions(50, seed=1)))
    assert pipeline.rows_from_records([]) == []
    assert pipeline.transform(pipeline.rows_from_records([])).shape == (0, pipeline.width)


BLOCK_FEATURES = [
    # scale 1e30: the float32 bound (|x * scale + shift| <= FLOAT32_MAX / 2) is reached at |x - 1| ~ 1.7e8
    {"name": "a", "type": "float", "transforms": [{"kind": "standardize", "mean": 1.0, "std": 1e-30}]},
    {
        "name": "b",
        "type": "float",
        "minimum": -2.5,
        "maximum": 3.0,
        "transforms": [{"kind": "min_max", "min": -1e-31, "max": 1e-31}],
    },
    {"name": "n", "type": "int", "minimum": -5},
    {"name": "flag", "type": "bool"},
    {"name": "g", "type": "float", "minimum": 0, "transforms": [{"kind": "log1p"}]},
]
EDGE = 1.0 + 3.4028234663852886e38 / 2 / 1e30
column_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-10, 10),
    st.sampled_from([EDGE, -EDGE + 2, np.nextafter(EDGE, 0), np.nextafter(EDGE, np.inf), 2e-12, -2e-12, 0.0, 1.0, 2.5]),
    st.integers(-10, 10).map(float),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(column_values, min_size=5, max_size=5), min_size=1, max_size=4))
def test_a_vouched_block_is_exactly_what_the_column_checks_accept(matrix: list[list[float]]) -> None:
    """The block check reduces every bound (range, finite, an affine transform's float32 limit) to
    one least and one greatest value per column; whatever it vouches for, the column-by-column
    checks (its fallback, and the verdict) accept as the same block."""
    p = pipeline(*BLOCK_FEATURES)
    x = np.array(matrix, dtype=np.float64)
    vouched = p._block_check.vouch(x)
    checked = pipeline(*BLOCK_FEATURES)
    checked._block_check.vouch = lambda _: None  # type: ignore[method-assign]
    try:
        expected = checked.block_from_array(x)
    except RecordError:
        assert vouched is None, "vouched for a block the column checks refuse"
        return
    if vouched is not None:
        np.testing.assert_array_equal(vouched, expected)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(column_values, min_size=5, max_size=5), min_size=1, max_size=4))
def test_the_fast_path_agrees_with_the_checked_path_at_the_float32_edge(matrix: list[list[float]]) -> None:
    """JSON records near an affine transform's float32 limit: the fast path (the block check) and
    the record-by-record checks give the same verdict and the same model input."""
    records = [
        {"a": a, "b": b, "n": int(n) if math.isfinite(n) else n, "flag": bool(f == 1.0), "g": g}
        for a, b, n, f, g in matrix
    ]
    assert_fast_path_agrees(pipeline(*BLOCK_FEATURES), records)
