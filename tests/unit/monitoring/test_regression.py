"""A regression model end to end: its baseline (quantile bins of the predicted values, MAE on the
holdout), its log, and the MAE from feedback against numpy."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import orjson
import pytest
from sklearn.linear_model import LinearRegression

from sagegate.monitoring.baseline import Baseline
from sagegate.monitoring.engine import DuckDBEngine
from sagegate.monitoring.monitor import monitor_version, window_ending
from sagegate.packaging import build_package
from sagegate.packaging.builder import onnx_predict
from tests.unit.monitoring.conftest import NOW

FEATURES = [{"name": "x1", "type": "float"}, {"name": "x2", "type": "float"}]


def _rows(n: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)) + shift
    return x, 3 * x[:, 0] - 2 * x[:, 1] + rng.normal(0, 0.5, n)


def test_a_regression_model_is_monitored_by_its_error(tmp_path: Path) -> None:
    x, y = _rows(2000, 0)
    held_x, held_y = _rows(500, 1)
    model = LinearRegression().fit(x, y)
    holdout = {"x1": held_x[:, 0], "x2": held_x[:, 1], "y": held_y}
    built = build_package(
        model,
        framework="sklearn",
        name="price",
        version="1",
        features=FEATURES,
        task="regression",
        sample=[{"x1": 0.1, "x2": 0.2}],
        output_dir=tmp_path / "pkg",
        training_data=x,
        holdout=holdout,
        label_column="y",
    )
    assert built.baseline is not None
    baseline = Baseline.read(built.baseline)
    predicted = onnx_predict(built.path / "model.onnx", {"input": x.astype(np.float32)}, "variable").reshape(-1)
    assert baseline.prediction.edges == sorted(set(np.quantile(predicted, np.arange(1, 10) / 10).tolist()))
    held = onnx_predict(built.path / "model.onnx", {"input": held_x.astype(np.float32)}, "variable").reshape(-1)
    assert baseline.metrics["mae"] == pytest.approx(np.abs(held - held_y).mean())
    assert baseline.prediction.class_rates is None

    # served: a window whose truth drifted away from the model (the relation changed)
    live_x, live_y = _rows(1000, 2)
    live_y = live_y + 2.0
    live = onnx_predict(built.path / "model.onnx", {"input": live_x.astype(np.float32)}, "variable").reshape(-1)
    log = tmp_path / "predictions.jsonl"
    with log.open("wb") as fh:
        for i, (features, value, truth) in enumerate(zip(live_x.tolist(), live.tolist(), live_y.tolist(), strict=True)):
            at = NOW - timedelta(minutes=40) + timedelta(seconds=i)
            fh.write(
                orjson.dumps(
                    {
                        "prediction_id": f"r{i}",
                        "model": "price",
                        "version": "1",
                        "features": {"x1": features[0], "x2": features[1]},
                        "prediction": value,
                        "score": value,
                        "degraded": False,
                        "timestamp": at.isoformat(),
                    }
                )
                + b"\n"
                + orjson.dumps(
                    {"type": "feedback", "prediction_id": f"r{i}", "outcome": truth, "timestamp": at.isoformat()}
                )
                + b"\n"
            )
    report = monitor_version(
        DuckDBEngine(log),
        built.manifest,
        baseline,
        window=window_ending(NOW, "1h"),
        accuracy_window=window_ending(NOW, "7d"),
    )
    (day,) = report.accuracy_by_day
    assert day[1].metrics["mae"] == pytest.approx(np.abs(live - live_y).mean())
    by = {(r.feature, r.statistic): r for r in report.results}
    assert by["prediction", "mae_rise"].failed
    assert not by["x1", "psi"].failed and not by["prediction", "score_tvd"].failed
    assert ("prediction", "class_rate_tvd") not in by
