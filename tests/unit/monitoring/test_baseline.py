"""The package's baseline against numpy (and scikit-learn) on the same training data, computed here."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from sagegate.manifest import ModelManifest
from sagegate.monitoring.baseline import QUANTILES, SCORE_EDGES, Baseline, rank_auc
from sagegate.packaging import PackageError, build_package
from sagegate.packaging.builder import onnx_predict

FEATURES = [
    {"name": "income", "type": "float", "required": False, "default": 0.0},
    {"name": "age", "type": "int", "minimum": 0, "maximum": 120},
    {"name": "city", "type": "categorical", "categories": ["a", "b", "c", "d"], "transforms": [{"kind": "one_hot"}]},
    {"name": "member", "type": "bool", "protected": True},
]


def _data(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "income": np.where(rng.random(n) < 0.1, np.nan, rng.lognormal(10, 0.5, n)),
            "age": rng.integers(18, 90, n),
            "city": rng.choice(["a", "b", "c", "d"], n, p=[0.4, 0.3, 0.2, 0.1]),
            "member": rng.random(n) < 0.3,
        }
    )
    y = ((frame["age"] > 50) ^ (frame["city"] == "a") ^ (rng.random(n) < 0.1)).to_numpy().astype(int)
    return frame, y


def _matrix(frame: pd.DataFrame) -> np.ndarray:
    city = np.stack([(frame["city"] == c).to_numpy() for c in "abcd"], axis=1)
    income = frame["income"].fillna(0.0).to_numpy()
    return np.column_stack([income, frame["age"], city, frame["member"]]).astype(np.float32)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, pd.DataFrame, np.ndarray]:
    frame, y = _data(3000)
    holdout, truth = _data(1000, seed=1)
    model = LogisticRegression(max_iter=500).fit(_matrix(frame), y)
    built = build_package(
        model,
        framework="sklearn",
        name="credit",
        version="1",
        features=FEATURES,
        task="binary",
        labels=["no", "yes"],
        sample=[{"income": 1.0, "age": 30, "city": "a", "member": True}],
        output_dir=tmp_path_factory.mktemp("credit") / "pkg",
        training_data=frame,
        holdout=holdout.assign(defaulted=np.where(truth == 1, "yes", "no")),
        label_column="defaulted",
        monitoring={"thresholds": {"psi": 0.25}},
    )
    assert built.baseline is not None
    return built.path, frame, holdout, truth


def test_the_manifest_points_at_the_baseline_with_its_hash(
    package: tuple[Path, pd.DataFrame, pd.DataFrame, np.ndarray],
) -> None:
    import hashlib

    path = package[0]
    manifest = ModelManifest.read(path)
    assert manifest.monitoring is not None and manifest.monitoring.baseline == "baseline.json"
    assert manifest.monitoring.baseline_sha256 == hashlib.sha256((path / "baseline.json").read_bytes()).hexdigest()
    assert manifest.thresholds.psi == 0.25 and manifest.thresholds.mean_shift_sigma == 3.0
    assert manifest.feature("member").protected is True


def test_numeric_profiles_agree_with_numpy(package: tuple[Path, pd.DataFrame, pd.DataFrame, np.ndarray]) -> None:
    path, frame, _, _ = package
    baseline = Baseline.read(path / "baseline.json")
    assert baseline.rows == len(frame)
    for name in ("income", "age"):
        values = frame[name].to_numpy(dtype=float)
        present = values[~np.isnan(values)]
        profile = baseline.features[name]
        assert profile.kind == "numeric"
        assert profile.count == len(values)
        assert profile.missing_rate == pytest.approx(np.isnan(values).mean())
        assert (profile.mean, profile.std) == pytest.approx((present.mean(), present.std()))
        assert (profile.min, profile.max) == (present.min(), present.max())
        assert list(profile.quantiles.values()) == pytest.approx(np.quantile(present, QUANTILES).tolist())
        assert profile.edges == sorted(set(np.quantile(present, np.arange(1, 10) / 10).tolist()))
        counts = np.bincount(np.digitize(present, profile.edges), minlength=len(profile.edges) + 1)
        assert profile.frequencies == pytest.approx((counts / counts.sum()).tolist())
    member = baseline.features["member"]
    assert member.edges == [0.5] and member.frequencies == pytest.approx(
        [1 - frame["member"].mean(), frame["member"].mean()]
    )


def test_categorical_frequencies_and_the_scores_of_the_packaged_model(
    package: tuple[Path, pd.DataFrame, pd.DataFrame, np.ndarray],
) -> None:
    path, frame, holdout, truth = package
    baseline = Baseline.read(path / "baseline.json")
    city = baseline.features["city"]
    seen = Counter(frame["city"])
    assert city.categories == ["a", "b", "c", "d"]
    assert city.frequencies == pytest.approx([seen[c] / len(frame) for c in "abcd"] + [0.0])

    # the score histogram is the ONNX model's own, run here on the same rows
    probabilities = onnx_predict(path / "model.onnx", {"input": _matrix(frame)}, "probabilities")[:, 1]
    counts = np.bincount(np.digitize(probabilities, SCORE_EDGES), minlength=10)
    assert baseline.prediction.frequencies == pytest.approx((counts / counts.sum()).tolist())
    assert baseline.prediction.class_rates == pytest.approx(
        {"no": (probabilities < 0.5).mean(), "yes": (probabilities >= 0.5).mean()}
    )

    held = onnx_predict(path / "model.onnx", {"input": _matrix(holdout)}, "probabilities")[:, 1]
    assert baseline.holdout_rows == len(truth)
    assert baseline.metrics["auc"] == pytest.approx(roc_auc_score(truth, held))
    assert baseline.metrics["accuracy"] == pytest.approx(((held >= 0.5) == truth).mean())


def test_rank_auc_against_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(4)
    truth = rng.integers(0, 2, 500)
    score = np.round(rng.random(500) * 0.5 + truth * 0.3, 1)  # many ties
    assert rank_auc(truth, score) == pytest.approx(roc_auc_score(truth, score))


def test_the_same_data_gives_the_same_bytes_and_no_data_no_baseline(tmp_path: Path) -> None:
    frame, y = _data(500)
    model = LogisticRegression(max_iter=500).fit(_matrix(frame), y)
    common = {
        "framework": "sklearn",
        "name": "credit",
        "version": "1",
        "features": FEATURES,
        "task": "binary",
        "sample": [{"income": 1.0, "age": 30, "city": "a", "member": True}],
    }
    first = build_package(model, output_dir=tmp_path / "a", training_data=frame, **common)
    second = build_package(model, output_dir=tmp_path / "b", training_data=frame.copy(), **common)
    assert (first.path / "baseline.json").read_bytes() == (second.path / "baseline.json").read_bytes()
    assert first.archive_sha256 == second.archive_sha256
    bare = build_package(model, output_dir=tmp_path / "c", **common)
    assert bare.baseline is None and bare.manifest.monitoring is None and not (bare.path / "baseline.json").exists()
    with pytest.raises(PackageError, match="no column 'age'"):
        build_package(model, output_dir=tmp_path / "d", training_data=frame.drop(columns="age"), **common)
    with pytest.raises(PackageError, match="holdout needs its label column"):
        build_package(model, output_dir=tmp_path / "e", training_data=frame, holdout=frame, **common)
