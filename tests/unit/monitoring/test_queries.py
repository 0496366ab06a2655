"""Each statistic the engine computes, against numpy / scikit-learn over the same logged rows (read
back from the log here). The Athena rendering is proved against these in test_athena.py."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from sagegate.local.data import generate_transactions
from sagegate.monitoring.baseline import Baseline
from sagegate.monitoring.checks import accuracy_of
from sagegate.monitoring.engine import DuckDBEngine
from sagegate.monitoring.monitor import monitor_version, window_ending
from sagegate.monitoring.sql import AccuracyQuery, ProfileQuery, Scope
from sagegate.packaging import BuiltPackage
from tests.unit.monitoring.conftest import NOW, log_lines, write_log


@pytest.fixture(scope="module")
def log(fraud: BuiltPackage, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Predictions in the window (some features left out), two outside it, another model's, refusals,
    feedback (some twice: the latest counts), and a malformed value."""
    data = generate_transactions(1500, seed=21)
    rng = np.random.default_rng(0)
    records = [
        {k: v for k, v in r.items() if not (k in ("channel", "account_age_days") and rng.random() < 0.2)}
        for r in data.records
    ]
    path = tmp_path_factory.mktemp("log") / "predictions.jsonl"
    write_log(path, log_lines(fraud, records, labels=data.label))
    early = log_lines(fraud, data.records[:2], start=NOW - timedelta(hours=3), prefix="early")
    other = [
        line.replace(b'"model":"fraud"', b'"model":"other"') for line in log_lines(fraud, data.records[:5], prefix="o")
    ]
    refused = [
        orjson.dumps(
            {
                "type": "rejected",
                "model": "fraud",
                "version": fraud.manifest.version,
                "rejected": {
                    "amount": "expected a number, got str",
                    **({"hour": "25 is above the maximum 23"} if i % 2 else {}),
                },
                "timestamp": (NOW - timedelta(minutes=30)).isoformat(),
            }
        )
        for i in range(12)
    ]
    # the truth changed its mind for p0: the later answer counts
    second = [
        orjson.dumps(
            {
                "type": "feedback",
                "prediction_id": "p0",
                "outcome": "fraud",
                "model": "fraud",
                "timestamp": NOW.isoformat(),
            }
        )
    ]
    write_log(path, early, other, refused, second)
    return path


def _logged(path: Path) -> tuple[list[dict[str, Any]], dict[str, int]]:
    lines = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    window = window_ending(NOW, "1h")
    predictions = [
        x
        for x in lines
        if x.get("type") is None
        and x["model"] == "fraud"
        and window.start.isoformat() <= x["timestamp"] < NOW.isoformat()
    ]
    truth: dict[str, int] = {}
    for x in sorted((x for x in lines if x.get("type") == "feedback"), key=lambda x: x["timestamp"]):
        truth[x["prediction_id"]] = 1 if x["outcome"] in (1, "fraud") else 0
    return predictions, truth


def test_the_window_profile_against_numpy(fraud: BuiltPackage, fraud_baseline: Baseline, log: Path) -> None:
    engine = DuckDBEngine(log)
    scope = Scope(
        engine.dialect, engine.source(fraud.manifest), fraud.manifest, fraud.manifest.version, window_ending(NOW, "1h")
    )
    query = ProfileQuery(scope, fraud_baseline)
    counts = query.parse(engine.rows(query.sql)[0])
    predictions, _ = _logged(log)
    assert counts.rows == counts.model_rows == len(predictions) == 1500
    assert counts.rejected_rows == 12
    assert counts.features["amount"].rejected == 12 and counts.features["hour"].rejected == 6
    for name in ("amount", "account_age_days", "is_foreign"):
        values = np.array(
            [np.nan if p["features"][name] is None else p["features"][name] for p in predictions], dtype=float
        )
        present = values[~np.isnan(values)]
        got, profile = counts.features[name], fraud_baseline.features[name]
        assert got.present == len(present)
        assert (got.mean, got.std) == pytest.approx((present.mean(), present.std()))
        assert got.bins == np.bincount(np.digitize(present, profile.edges), minlength=len(profile.edges) + 1).tolist()
        assert got.below_min + got.above_max == int(((present < profile.min) | (present > profile.max)).sum())
    channels = [p["features"]["channel"] for p in predictions if p["features"]["channel"] is not None]
    categories = fraud_baseline.features["channel"].categories
    assert counts.features["channel"].bins == [channels.count(c) for c in categories] + [0]
    scores = np.array([p["score"] for p in predictions])
    edges = fraud_baseline.prediction.edges
    assert counts.score_bins == np.bincount(np.digitize(scores, edges), minlength=len(edges) + 1).tolist()
    assert counts.class_counts == {"legit": int((scores < 0.5).sum()), "fraud": int((scores >= 0.5).sum())}


def test_accuracy_from_feedback_against_scikit_learn(fraud: BuiltPackage, log: Path) -> None:
    engine = DuckDBEngine(log)
    scope = Scope(
        engine.dialect, engine.source(fraud.manifest), fraud.manifest, fraud.manifest.version, window_ending(NOW, "7d")
    )
    (row,) = engine.rows(AccuracyQuery.build(scope, by_day=False).sql)
    got = accuracy_of(fraud.manifest.outputs.task, row[1:])
    lines = [orjson.loads(x) for x in log.read_bytes().splitlines()]
    _, truth = _logged(log)
    joined = [x for x in lines if x.get("type") is None and x["model"] == "fraud" and x["prediction_id"] in truth]
    y = np.array([truth[x["prediction_id"]] for x in joined])
    score = np.array([x["score"] for x in joined])
    flagged = (score >= 0.5).astype(int)
    assert got.rows == len(joined) == 1500
    assert got.metrics["auc"] == pytest.approx(roc_auc_score(y, score))
    assert got.metrics["precision"] == pytest.approx(precision_score(y, flagged))
    assert got.metrics["recall"] == pytest.approx(recall_score(y, flagged))
    assert got.metrics["accuracy"] == pytest.approx((y == flagged).mean())


def test_bias_against_per_group_rates_computed_here(fraud: BuiltPackage, fraud_baseline: Baseline, log: Path) -> None:
    engine = DuckDBEngine(log)
    report = monitor_version(
        engine,
        fraud.manifest,
        fraud_baseline,
        window=window_ending(NOW, "1h"),
        accuracy_window=window_ending(NOW, "7d"),
    )
    predictions, truth = _logged(log)
    foreign = np.array([p["features"]["is_foreign"] for p in predictions]) == 1
    flagged = np.array([p["score"] >= 0.5 for p in predictions])
    y = np.array([truth[p["prediction_id"]] for p in predictions])
    rates = [flagged[foreign].mean(), flagged[~foreign].mean()]
    tpr = [flagged[g & (y == 1)].mean() for g in (foreign, ~foreign)]
    fpr = [flagged[g & (y == 0)].mean() for g in (foreign, ~foreign)]
    by = {(r.feature, r.statistic): r for r in report.results}
    assert by["is_foreign", "demographic_parity_difference"].value == pytest.approx(abs(rates[0] - rates[1]))
    assert by["is_foreign", "equalized_odds_difference"].value == pytest.approx(
        max(abs(tpr[0] - tpr[1]), abs(fpr[0] - fpr[1]))
    )
    groups = {g.group: g for g in report.bias["is_foreign"]}
    assert groups["true"].selection_rate == pytest.approx(rates[0]) and groups["false"].rows == int((~foreign).sum())
