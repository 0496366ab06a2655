"""A multiclass model end to end, each number against scikit-learn or numpy on the same rows: its
baseline (class rates of the training rows, accuracy on a holdout whose truth is half labels, half
class indexes), the accuracy from feedback over a window (labels and indexes again, a truth that
changed its mind), and prediction drift by class rates; injected drift and noisy truth fail, clean
windows pass. The feedback's outcome reaches the SQL as text (JSON Lines and Firehose alike), so
its reading of a label or an index must be the baseline's (`class_index`) for every label set."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import pytest
from sklearn.metrics import accuracy_score

from sagegate.manifest import ModelManifest, Outputs, Task
from sagegate.monitoring.baseline import SCORE_EDGES, Baseline, class_index
from sagegate.monitoring.engine import DuckDBEngine
from sagegate.monitoring.monitor import VersionReport, monitor_version, window_ending
from sagegate.monitoring.sql import truth_expression
from tests.unit.monitoring.conftest import (
    NOW,
    TIERS,
    Tiers,
    feedback_lines,
    multiclass_lines,
    probabilities,
    tier_data,
)


@pytest.fixture(scope="module")
def baseline(tiers: Tiers) -> Baseline:
    assert tiers.package.baseline is not None
    return Baseline.read(tiers.package.baseline)


def _monitor(tiers: Tiers, baseline: Baseline, path: Path, lines: list[dict[str, Any]]) -> VersionReport:
    path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    engine = DuckDBEngine(path)
    try:
        return monitor_version(
            engine,
            tiers.package.manifest,
            baseline,
            window=window_ending(NOW, "1h"),
            accuracy_window=window_ending(NOW, "7d"),
        )
    finally:
        engine.close()


def _by(report: VersionReport) -> dict[tuple[str, str], Any]:
    return {(r.feature, r.statistic): r for r in report.results}


def _predicted(lines: list[dict[str, Any]]) -> np.ndarray:
    return np.array([TIERS.index(x["label"]) for x in lines])


def _tvd(expected: np.ndarray, counts: np.ndarray) -> float:
    return float(0.5 * np.abs(counts / counts.sum() - expected).sum())


def test_the_baseline_is_scikit_learns_on_the_same_rows(tiers: Tiers, baseline: Baseline) -> None:
    assert tiers.package.manifest.outputs.labels == TIERS
    n = len(tiers.training)
    assert baseline.rows == n and baseline.holdout_rows == len(tiers.holdout)
    # the truth was given half as labels, half as class indexes: both read as the same classes
    held = tiers.model.predict(tiers.matrix(tiers.holdout))
    assert baseline.metrics == {"accuracy": pytest.approx(accuracy_score(tiers.holdout_truth, held), abs=2e-3)}
    assert 0.6 < baseline.metrics["accuracy"] < 0.9  # far from chance (1/3) and from perfect: a drop can show
    # class rates and the top-class probability's histogram of the training rows (ONNX and
    # scikit-learn agree to float32: a row or two near a tie or an edge may land elsewhere)
    trained = tiers.model.predict(tiers.matrix(tiers.training))
    rates = np.bincount(trained, minlength=3) / n
    assert baseline.prediction.class_rates is not None
    assert list(baseline.prediction.class_rates) == TIERS
    assert list(baseline.prediction.class_rates.values()) == pytest.approx(rates.tolist(), abs=3 / n)
    top = tiers.model.predict_proba(tiers.matrix(tiers.training)).max(axis=1)
    histogram, _ = np.histogram(top, bins=[0.0, *SCORE_EDGES, 1.0])
    assert baseline.prediction.score == "top-class probability" and baseline.prediction.edges == SCORE_EDGES
    assert baseline.prediction.frequencies == pytest.approx((histogram / n).tolist(), abs=3 / n)
    assert baseline.prediction.mean == pytest.approx(top.mean(), abs=1e-5)


def _flipped(truth: np.ndarray, share: float, seed: int) -> np.ndarray:
    """`share` of the truths moved to another class, uniformly."""
    rng = np.random.default_rng(seed)
    flip = rng.random(len(truth)) < share
    return np.where(flip, (truth + rng.integers(1, 3, len(truth))) % 3, truth)


def _feedback(lines: list[dict[str, Any]], truth: np.ndarray) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Feedback for four predictions in five: odd rows by label, even rows by class index; row 1
    first says the wrong class, then (later) its truth. Answers the lines and the truth per id."""
    given = [None if i % 5 == 0 else TIERS[t] if i % 2 else int(t) for i, t in enumerate(truth.tolist())]
    wrong = (int(truth[1]) + 1) % 3
    first = feedback_lines(lines[1:2], [wrong], after=timedelta(seconds=1))
    joined = {x["prediction_id"]: int(t) for i, (x, t) in enumerate(zip(lines, truth.tolist(), strict=True)) if i % 5}
    return [*first, *feedback_lines(lines, given)], joined


@pytest.mark.parametrize("noise", [0.0, 0.3], ids=["clean", "30%-flipped"])
def test_accuracy_from_feedback_is_scikit_learns(
    tiers: Tiers, baseline: Baseline, tmp_path: Path, noise: float
) -> None:
    records, truth = tier_data(2000, seed=20)
    truth = _flipped(truth, noise, seed=21) if noise else truth
    lines = multiclass_lines(tiers.package, records)
    feedback, joined = _feedback(lines, truth)
    report = _monitor(tiers, baseline, tmp_path / "log.jsonl", [*lines, *feedback])

    by_id = {x["prediction_id"]: x["label"] for x in lines}
    reference = accuracy_score([TIERS[t] for t in joined.values()], [by_id[p] for p in joined])
    (day,) = report.accuracy_by_day
    assert day[1].rows == len(joined) == 1600
    assert day[1].metrics["accuracy"] == pytest.approx(reference, abs=1e-12)
    drop = _by(report)["prediction", "accuracy_drop"]
    held = baseline.metrics["accuracy"]
    assert drop.value == pytest.approx((held - reference) / held, abs=1e-12)
    assert drop.failed is bool(noise)
    assert not any(r.failed for r in report.results if r.check != "accuracy")  # the traffic itself is clean


@pytest.mark.parametrize("shift", [0.0, 1.0], ids=["clean", "spend-shifted"])
def test_class_rate_drift_is_the_tvd_of_the_class_rates(
    tiers: Tiers, baseline: Baseline, tmp_path: Path, shift: float
) -> None:
    records, _ = tier_data(2000, seed=30, spend_shift=shift)
    lines = multiclass_lines(tiers.package, records)
    report = _monitor(tiers, baseline, tmp_path / "log.jsonl", lines)

    assert baseline.prediction.class_rates is not None
    expected = np.array([baseline.prediction.class_rates[t] for t in TIERS])
    counts = np.bincount(_predicted(lines), minlength=3)
    assert report.counts.class_counts == dict(zip(TIERS, counts.tolist(), strict=True))
    by = _by(report)
    rates = by["prediction", "class_rate_tvd"]
    assert rates.value == pytest.approx(_tvd(expected, counts), abs=1e-12)
    assert rates.failed is bool(shift) and (rates.value > 0.1) is bool(shift)
    # the score histogram is of the top-class probability, the score_field the gateway logged
    top = probabilities(tiers.package, records).max(axis=1)
    assert [x["score"] for x in lines] == top.tolist()
    histogram = np.bincount(np.searchsorted(np.array(SCORE_EDGES), top, side="right"), minlength=10)
    score = by["prediction", "score_tvd"]
    assert score.value == pytest.approx(_tvd(np.array(baseline.prediction.frequencies), histogram), abs=1e-12)
    assert by["spend", "psi"].failed is bool(shift)
    assert not by["region", "psi"].failed and not by["visits", "psi"].failed
    # no feedback at all in the window: the accuracy is not judged (and the judge does not fall over)
    assert by["prediction", "labelled_rows"].status == "skipped" and report.accuracy_by_day == []


# -- a truth as text: the SQL reads what the baseline reads -------------------------------------------

LABEL_SETS = [
    (Task.MULTICLASS, TIERS),
    (Task.MULTICLASS, ["0", "1", "2"]),  # classes 0..2: a label is its own index
    (Task.MULTICLASS, ["1", "2", "3"]),  # classes 1..3: "1" is a label and an index
    (Task.MULTICLASS, ["-1", "0", "1"]),  # sell, hold, buy
    (Task.MULTICLASS, ["0", "2", "5"]),
    (Task.MULTICLASS, ["b", "a", "1"]),
    (Task.BINARY, ["legit", "fraud"]),
    (Task.BINARY, ["0", "1"]),
    (Task.BINARY, ["1", "2"]),  # a binary model trained on classes 1 and 2
    (Task.BINARY, ["-1", "1"]),
]


@pytest.mark.parametrize(("task", "labels"), LABEL_SETS, ids=[f"{t.value}:{'/'.join(ls)}" for t, ls in LABEL_SETS])
def test_the_sql_reads_a_truth_as_the_baseline_does(task: Task, labels: list[str]) -> None:
    """The log keeps an outcome as text (a class index 1 and a label "1" alike): for every text the
    log can hold, the SQL's truth is the class `class_index` gives it (the label; a binary model's
    1 or 0), and a whole number's class is its text's: the baseline's holdout and the window's
    feedback read the same value as the same class."""
    outcomes = sorted({*labels, *(str(i) for i in range(-1, len(labels) + 2)), "true", "false", "x", "", " "})
    manifest = ModelManifest.model_construct(outputs=Outputs(task=task, labels=labels, onnx_output="probabilities"))
    con = duckdb.connect()
    con.execute("CREATE TABLE t (o VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?)", [[o] for o in outcomes])
    read = dict(con.execute(f"SELECT o, {truth_expression(manifest, 'o')} FROM t").fetchall())
    for outcome in outcomes:
        index = class_index(outcome, labels)
        assert read[outcome] == (None if index is None else index if task is Task.BINARY else labels[index]), outcome
        if outcome.lstrip("-").isdigit():
            assert class_index(int(outcome), labels) == class_index(float(outcome), labels) == index, outcome
