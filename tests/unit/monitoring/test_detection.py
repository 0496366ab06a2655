"""Drift injected on purpose is detected, and clean traffic is not flagged: the false-alarm rate of
the window checks over repeated clean windows (seeded) stays low."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from sagegate.local.data import generate_transactions
from sagegate.monitoring.baseline import Baseline
from sagegate.monitoring.engine import DuckDBEngine
from sagegate.monitoring.monitor import VersionReport, monitor_version, window_ending
from sagegate.packaging import BuiltPackage
from tests.unit.monitoring.conftest import NOW, log_lines, shifted, write_log

WINDOW_ROWS = 1000


def _check(fraud: BuiltPackage, baseline: Baseline, path: Path, end: Any = NOW) -> VersionReport:
    return monitor_version(
        DuckDBEngine(path),
        fraud.manifest,
        baseline,
        window=window_ending(end, "1h"),
        accuracy_window=window_ending(end, "7d"),
    )


def _failed(report: VersionReport) -> set[tuple[str, str]]:
    return {(r.feature, r.statistic) for r in report.failed if r.check != "bias"}


def test_clean_windows_raise_few_false_alarms(fraud: BuiltPackage, fraud_baseline: Baseline, tmp_path: Path) -> None:
    """20 windows of fresh traffic from the training distribution: at most one may flag anything (the
    bias checks aside: they judge the model, which treats foreign transactions differently on purpose)."""
    path = tmp_path / "clean.jsonl"
    hours = 20
    for h in range(hours):
        data = generate_transactions(WINDOW_ROWS, seed=100 + h)
        start = NOW - timedelta(hours=h + 1) + timedelta(minutes=5)
        write_log(
            path,
            log_lines(
                fraud, data.records, start=start, spread=timedelta(minutes=50), labels=data.label, prefix=f"h{h}-"
            ),
        )
    alarms = {h: _failed(_check(fraud, fraud_baseline, path, NOW - timedelta(hours=h))) for h in range(hours)}
    flagged = {h: a for h, a in alarms.items() if a}
    assert len(flagged) <= 1, flagged
    report = _check(fraud, fraud_baseline, path)
    assert report.counts.rows == WINDOW_ROWS and {r.status for r in report.results} >= {"ok"}


@pytest.fixture(scope="module")
def traffic() -> Any:
    return generate_transactions(2000, seed=55)


def _write(
    path: Path, fraud: BuiltPackage, records: list[dict[str, Any]], labels: Any = None, extra: list[bytes] = ()
) -> Path:  # type: ignore[assignment]
    write_log(path, log_lines(fraud, records, labels=labels), *([list(extra)] if extra else []))
    return path


def test_amounts_times_three_and_a_new_merchant_mix(
    fraud: BuiltPackage, fraud_baseline: Baseline, tmp_path: Path, traffic: Any
) -> None:
    failed = _failed(_check(fraud, fraud_baseline, _write(tmp_path / "l.jsonl", fraud, shifted(traffic))))
    assert {("amount", "psi"), ("merchant_category", "psi"), ("prediction", "score_tvd")} <= failed
    assert ("hour", "psi") not in failed and ("channel", "psi") not in failed


def test_missing_values_out_of_range_and_a_mean_shift(
    fraud: BuiltPackage, fraud_baseline: Baseline, tmp_path: Path, traffic: Any
) -> None:
    rng = np.random.default_rng(1)
    records = []
    for original in traffic.records:
        r = dict(original)
        if rng.random() < 0.3:
            del r["distance_from_home_km"]  # the caller stopped sending it: the model got the default
        if rng.random() < 0.05:
            r["account_age_days"] = 9000 + int(rng.integers(0, 1000))  # beyond anything in training
        r["transactions_24h"] += 25
        records.append(r)
    failed = _failed(_check(fraud, fraud_baseline, _write(tmp_path / "l.jsonl", fraud, records)))
    assert ("distance_from_home_km", "missing_rate_increase") in failed
    assert ("account_age_days", "out_of_range_rate") in failed
    assert {("transactions_24h", "mean_shift_sigma"), ("transactions_24h", "psi")} <= failed
    assert ("amount", "psi") not in failed


def test_refused_requests_are_type_failures_of_their_feature(
    fraud: BuiltPackage, fraud_baseline: Baseline, tmp_path: Path, traffic: Any
) -> None:
    refused = [
        orjson.dumps(
            {
                "type": "rejected",
                "model": "fraud",
                "version": fraud.manifest.version,
                "rejected": {"hour": "expected an integer, got str"},
                "timestamp": (NOW - timedelta(minutes=20)).isoformat(),
            }
        )
        for _ in range(100)
    ]
    failed = _failed(_check(fraud, fraud_baseline, _write(tmp_path / "l.jsonl", fraud, traffic.records, extra=refused)))
    assert failed == {("hour", "type_failure_rate")}


def test_accuracy_drops_when_the_truth_stops_agreeing(
    fraud: BuiltPackage, fraud_baseline: Baseline, tmp_path: Path
) -> None:
    data = generate_transactions(6000, seed=56)
    rng = np.random.default_rng(2)
    noisy = np.where(rng.random(len(data)) < 0.3, 1 - data.label, data.label)  # 30% of the truths flipped
    clean = _check(fraud, fraud_baseline, _write(tmp_path / "clean.jsonl", fraud, data.records, labels=data.label))
    assert not {s for f, s in _failed(clean) if s.endswith("_drop")}
    report = _check(fraud, fraud_baseline, _write(tmp_path / "noisy.jsonl", fraud, data.records, labels=noisy))
    assert {("prediction", "auc_drop"), ("prediction", "accuracy_drop")} <= _failed(report)
    assert report.accuracy_by_day and report.accuracy_by_day[0][1].rows == len(data)
