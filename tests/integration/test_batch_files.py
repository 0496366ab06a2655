"""`sagegate batch` on a large CSV that a user wrote, with the faults real files have, far past the
first block the reader looks at: a word in a number column, a fraction in an integer column, a float
column whose first 150,000 values are whole numbers, and zip codes with leading zeros as categories.

Every bad cell must land in errors.jsonl with its row, field and reason; every other row must be
predicted exactly as the source model predicts it; the run must finish with exit 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
from sklearn.linear_model import LogisticRegression

from sagegate.features import FeaturePipeline
from sagegate.packaging import build_package

pytestmark = pytest.mark.integration

ROWS = 200_000
ZIPS = ["02134", "10001", "94105", "00501"]
FEATURES: list[dict[str, Any]] = [
    {"name": "amount", "type": "float", "minimum": 0, "transforms": [{"kind": "log1p"}]},
    {"name": "units", "type": "int", "minimum": 0, "maximum": 1000},
    {"name": "ratio", "type": "float", "transforms": [{"kind": "standardize", "mean": 5.0, "std": 3.0}]},
    {"name": "zip", "type": "categorical", "categories": ZIPS, "transforms": [{"kind": "one_hot"}]},
]
BAD_AMOUNT, BAD_UNITS, WHOLE_UNTIL = 190_000, 195_000, 150_000


def _records(n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    amount = np.round(rng.lognormal(3, 1, n), 2)
    units = rng.integers(0, 1000, n)
    ratio = rng.integers(0, 10, n).astype(float)
    ratio[WHOLE_UNTIL:] += np.round(rng.random(n - WHOLE_UNTIL), 3) if n > WHOLE_UNTIL else 0
    zips = rng.choice(ZIPS, n)
    return [
        {"amount": float(a), "units": int(u), "ratio": float(r), "zip": str(z)}
        for a, u, r, z in zip(amount, units, ratio, zips, strict=True)
    ]


@pytest.fixture(scope="module")
def zip_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LogisticRegression]:
    """A model whose answer depends strongly on the zip code, so a zip read as a number shows."""
    records = _records(4000, seed=1)
    x = FeaturePipeline([_feature(f) for f in FEATURES]).transform_records(records)
    y = np.array([r["zip"] in ("02134", "00501") for r in records], dtype=np.int64)
    flip = np.random.default_rng(2).random(len(y)) < 0.1
    model = LogisticRegression(max_iter=1000).fit(x, y ^ flip)
    package = build_package(
        model,
        framework="sklearn",
        name="zips",
        version="1",
        features=FEATURES,
        task="binary",
        labels=["other", "leading-zero"],
        sample=records[:20],
        output_dir=tmp_path_factory.mktemp("zips") / "pkg",
    )
    return package.path, model


def _feature(spec: dict[str, Any]) -> Any:
    from sagegate.manifest import Feature

    return Feature.model_validate(spec)


def _format(value: float) -> str:
    # What a spreadsheet or pandas writes: whole numbers without a fraction.
    return str(int(value)) if float(value).is_integer() else repr(value)


def test_a_large_csv_with_late_bad_cells_is_predicted_row_by_row(
    tmp_path: Path, zip_model: tuple[Path, LogisticRegression]
) -> None:
    package, model = zip_model
    records = _records(ROWS, seed=7)
    lines = ["id,amount,units,ratio,zip"]
    for i, r in enumerate(records):
        amount = "oops" if i == BAD_AMOUNT else _format(r["amount"])
        units = "2.5" if i == BAD_UNITS else str(r["units"])
        lines.append(f"{i},{amount},{units},{_format(r['ratio'])},{r['zip']}")
    source = tmp_path / "orders.csv"
    source.write_text("\n".join(lines) + "\n")

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sagegate",
            "batch",
            str(source),
            "--output",
            str(tmp_path / "out"),
            "--package",
            str(package),
            "--id-column",
            "id",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert [(e["row"], e["field"]) for e in errors] == [(BAD_AMOUNT, "amount"), (BAD_UNITS, "units")]
    assert [e["reason"] for e in errors] == ["expected a number, got 'oops'", "expected an integer, got 2.5"]

    table = pa_csv.read_csv(
        tmp_path / "out" / "orders.predictions.csv",
        convert_options=pa_csv.ConvertOptions(column_types={"id": pa.int64(), "prediction": pa.float64()}),
    )
    ids = table.column("id").to_numpy()
    assert len(ids) == ROWS - 2 and BAD_AMOUNT not in ids and BAD_UNITS not in ids
    kept = [records[i] for i in ids]
    x = FeaturePipeline([_feature(f) for f in FEATURES]).transform_records(kept)
    expected = model.predict_proba(x)[:, 1]
    got = table.column("prediction").to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # The zip codes with leading zeros are the model's positive class: read as numbers they would not be.
    leading_zero = np.array([r["zip"].startswith("0") for r in kept])
    assert got[leading_zero].mean() > 0.7
    assert got[~leading_zero].mean() < 0.3
