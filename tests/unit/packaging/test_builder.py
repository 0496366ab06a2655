"""Packages built from real scikit-learn, XGBoost and PyTorch models, checked against the source."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from sagegate.features import FeaturePipeline
from sagegate.local.data import Transactions
from sagegate.local.examples import synthetic_features
from sagegate.manifest import ModelManifest
from sagegate.packaging import BuiltPackage, PackageError, ParityError, build_package, sha256_file


def onnx_output(built: BuiltPackage, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(built.path / "model.onnx"))
    return np.asarray(session.run([built.manifest.outputs.onnx_output], {"input": x})[0])


def iris() -> tuple[list[dict[str, float]], np.ndarray, list[dict[str, Any]]]:
    from sklearn.datasets import load_iris

    data = load_iris()
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    records = [dict(zip(names, map(float, row), strict=True)) for row in data.data]
    features = [
        {
            "name": n,
            "type": "float",
            "minimum": 0,
            "maximum": 20,
            "transforms": [
                {"kind": "standardize", "mean": float(data.data[:, i].mean()), "std": float(data.data[:, i].std())}
            ],
        }
        for i, n in enumerate(names)
    ]
    return records, data.target, features


@pytest.mark.parametrize("fixture", ["fraud_logreg", "fraud_xgboost", "fraud_mlp"])
def test_binary_packages_match_their_source_models(
    fixture: str, request: pytest.FixtureRequest, transactions: Transactions
) -> None:
    built: BuiltPackage = request.getfixturevalue(fixture)
    manifest = ModelManifest.read(built.path)
    assert manifest == built.manifest
    assert manifest.sha256 == sha256_file(built.path / "model.onnx")
    assert built.max_abs_diff <= 1e-3
    assert manifest.metrics["auc"] > 0.85  # the generated data is learnable; a broken pipeline is not
    x = FeaturePipeline(manifest.features).transform_records(transactions.records[:500])
    probabilities = onnx_output(built, x)
    assert probabilities.shape == (500, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    with tarfile.open(built.archive) as tar:
        # the example fraud models are packaged with their training data: a baseline, and an explainer
        assert sorted(tar.getnames()) == ["baseline.json", "explainer.npz", "manifest.json", "model.onnx"]


def test_sklearn_pipeline_multiclass(tmp_path: Path) -> None:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures

    records, target, features = iris()
    x = FeaturePipeline(synthetic := [*map(_feature, features)]).transform_records(records)
    model = make_pipeline(PolynomialFeatures(2), RandomForestClassifier(n_estimators=20, random_state=0)).fit(x, target)
    built = build_package(
        model,
        framework="sklearn",
        name="iris",
        version="1",
        features=synthetic,
        task="multiclass",
        labels=["setosa", "versicolor", "virginica"],
        sample=records[::10],
        output_dir=tmp_path / "iris",
    )
    np.testing.assert_allclose(onnx_output(built, x), model.predict_proba(x), atol=1e-5)


def test_sklearn_regression(tmp_path: Path) -> None:
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 5)).astype(np.float32)
    model = Ridge().fit(x, x @ np.arange(5.0) + 3)
    records = [{f"f{i}": float(v) for i, v in enumerate(row)} for row in x[:20]]
    built = build_package(
        model,
        framework="sklearn",
        name="ridge",
        version="2",
        features=synthetic_features(5),
        task="regression",
        sample=records,
        output_dir=tmp_path / "ridge",
    )
    np.testing.assert_allclose(onnx_output(built, x).reshape(-1), model.predict(x), rtol=1e-4, atol=1e-4)


def test_pytorch_multiclass_logits_become_probabilities(tmp_path: Path) -> None:
    import torch

    records, target, features = iris()
    parsed = [*map(_feature, features)]
    x = FeaturePipeline(parsed).transform_records(records)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    xs, ys = torch.from_numpy(x), torch.from_numpy(target)
    for _ in range(100):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(xs), ys).backward()
        optimizer.step()
    built = build_package(
        net,
        framework="pytorch",
        name="iris-net",
        version="1",
        features=parsed,
        task="multiclass",
        labels=["setosa", "versicolor", "virginica"],
        sample=records[::7],
        output_dir=tmp_path / "net",
    )
    with torch.no_grad():
        expected = torch.softmax(net(xs), dim=-1).numpy()
    np.testing.assert_allclose(onnx_output(built, x), expected, atol=1e-5)
    assert (onnx_output(built, x).argmax(axis=1) == target).mean() > 0.9


def test_an_onnx_file_is_packaged_as_is(tmp_path: Path, fraud_logreg: BuiltPackage) -> None:
    manifest = fraud_logreg.manifest
    built = build_package(
        fraud_logreg.path / "model.onnx",
        framework="onnx",
        name="fraud",
        version="9",
        features=manifest.features,
        task="binary",
        labels=["legit", "fraud"],
        sample=manifest.sample,
        output_dir=tmp_path / "copy",
    )
    assert built.manifest.sha256 == manifest.sha256
    assert built.manifest.outputs.onnx_output == "probabilities"


def _feature(spec: dict[str, Any]) -> Any:
    from sagegate.manifest import Feature

    return Feature.model_validate(spec)


def _logreg(width: int = 3) -> Any:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, width))
    return LogisticRegression().fit(x, x[:, 0] > 0)


def _args(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "framework": "sklearn",
        "name": "m",
        "version": "1",
        "features": synthetic_features(3),
        "task": "binary",
        "labels": ["n", "y"],
        "sample": [{"f0": 1.0, "f1": 2.0, "f2": -1.0}],
        "output_dir": tmp_path / "out",
    }
    return {**args, **overrides}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"framework": "caffe"}, "framework must be one of sklearn, xgboost, lightgbm, catboost, pytorch, tensorflow"),
        ({"sample": []}, "a sample input"),
        ({"sample": [{"f0": 1.0, "f1": "x", "f2": 0.0}]}, "sample record 0, field 'f1': expected a number"),
        ({"labels": ["a", "b", "c"], "task": "multiclass"}, "predicts 2 classes but 3 labels"),
        ({"tolerance": 0.0}, "outputs differ by"),
    ],
)
def test_refusals_are_one_line_and_write_nothing(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(PackageError, match=message) as caught:
        build_package(_logreg(), **_args(tmp_path, **overrides))
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # no package folder, no staging leftovers


def test_parity_failure_is_a_parity_error(tmp_path: Path) -> None:
    with pytest.raises(ParityError):
        build_package(_logreg(), **_args(tmp_path, tolerance=0.0))


def test_existing_and_unwritable_outputs(tmp_path: Path) -> None:
    first = build_package(_logreg(), **_args(tmp_path))
    with pytest.raises(PackageError, match="already exists"):
        build_package(_logreg(), **_args(tmp_path))
    again = build_package(_logreg(), **_args(tmp_path, version="2", overwrite=True))
    assert again.path == first.path and ModelManifest.read(first.path).version == "2"
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(PackageError, match="cannot write to"):
        build_package(_logreg(), **_args(tmp_path, output_dir=blocker / "pkg"))


def test_a_classifier_without_probabilities_is_refused(tmp_path: Path) -> None:
    from sklearn.svm import LinearSVC

    x = np.random.default_rng(0).normal(size=(50, 3))
    with pytest.raises(PackageError, match="LinearSVC has no predict_proba"):
        build_package(LinearSVC().fit(x, x[:, 0] > 0), **_args(tmp_path))
