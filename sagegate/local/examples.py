"""Example models trained on generated data, packaged for real: used by the quickstart, the demo,
the tests and the benchmarks. Needs the `demo` extra (scikit-learn, XGBoost; PyTorch for "mlp")."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from sagegate.features import FeaturePipeline
from sagegate.local.data import Transactions, fraud_features, generate_transactions
from sagegate.manifest import Feature
from sagegate.packaging import BuiltPackage, build_package

__all__ = ["ModelKind", "build_fraud_package", "build_synthetic_package", "synthetic_features", "train_classifier"]

ModelKind = Literal["logreg", "xgboost", "mlp"]
FRAUD_LABELS = ["legit", "fraud"]


def train_classifier(
    kind: ModelKind,
    x: np.ndarray,
    y: np.ndarray,
    *,
    seed: int = 0,
    trees: int = 100,
    hidden: tuple[int, int] = (128, 64),
    epochs: int = 5,
) -> tuple[Any, str]:
    """A trained binary classifier of the given kind and its framework name."""
    if kind == "logreg":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(max_iter=1000, class_weight="balanced").fit(x, y), "sklearn"
    if kind == "xgboost":
        import xgboost

        pos = max(float(y.mean()), 1e-3)
        model = xgboost.XGBClassifier(
            n_estimators=trees,
            max_depth=5,
            learning_rate=0.1,
            n_jobs=2,
            scale_pos_weight=(1 - pos) / pos,
            random_state=seed,
        )
        return model.fit(x, y), "xgboost"
    return _train_mlp(x, y, seed=seed, hidden=hidden, epochs=epochs), "pytorch"


def _train_mlp(x: np.ndarray, y: np.ndarray, *, seed: int, hidden: tuple[int, int], epochs: int) -> Any:
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], hidden[0]),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden[0], hidden[1]),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden[1], 1),
    )
    xs, ys = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.float32)).reshape(-1, 1)
    pos = max(float(y.mean()), 1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([(1 - pos) / pos]))
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(epochs):
        order = torch.randperm(len(xs))
        for start in range(0, len(xs), 256):
            batch = order[start : start + 256]
            optimizer.zero_grad()
            loss_fn(net(xs[batch]), ys[batch]).backward()
            optimizer.step()
    return net.eval()


def build_fraud_package(
    output_dir: Path,
    kind: ModelKind = "logreg",
    *,
    name: str = "fraud",
    version: str = "1",
    rows: int = 20_000,
    seed: int = 0,
    data: Transactions | None = None,
    overwrite: bool = True,
) -> BuiltPackage:
    """Trains a fraud model of `kind` on generated transactions and writes its package."""
    data = data or generate_transactions(rows, seed=seed)
    features = fraud_features(data)
    x = FeaturePipeline(features).transform_records(data.records)
    split = int(len(x) * 0.8)
    model, framework = train_classifier(kind, x[:split], data.label[:split], seed=seed)
    return _package(
        model,
        framework,
        features,
        x,
        data.label,
        split=split,
        records=data.records,
        output_dir=output_dir,
        name=name,
        version=version,
        overwrite=overwrite,
        lineage={"training_data_uri": f"generated://transactions?rows={len(x)}&seed={seed}", "params": {"kind": kind}},
        monitored=True,
    )


def synthetic_features(n: int = 30) -> list[Feature]:
    return [
        Feature(name=f"f{i}", type="float", transforms=[{"kind": "standardize", "mean": 0.0, "std": 1.0}])
        for i in range(n)
    ]


def build_synthetic_package(
    output_dir: Path,
    kind: ModelKind,
    *,
    n_features: int = 30,
    rows: int = 20_000,
    trees: int = 200,
    hidden: tuple[int, int] = (128, 64),
    name: str | None = None,
    seed: int = 0,
) -> BuiltPackage:
    """A binary classifier on `n_features` standard-normal features (benchmarks use this)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, n_features)).astype(np.float32)
    w = rng.normal(size=n_features)
    y = ((x @ w + 0.5 * np.sin(3 * x[:, 0]) * x[:, 1] + rng.normal(0, 1, rows)) > 0).astype(np.int64)
    model, framework = train_classifier(
        kind, x[: rows * 4 // 5], y[: rows * 4 // 5], seed=seed, trees=trees, hidden=hidden, epochs=2
    )
    features = synthetic_features(n_features)
    records = [{f"f{i}": float(v) for i, v in enumerate(row)} for row in x[:256].tolist()]
    return _package(
        model,
        framework,
        features,
        x,
        y,
        split=rows * 4 // 5,
        records=records,
        output_dir=output_dir,
        name=name or f"synthetic-{kind}",
        version="1",
        overwrite=True,
        lineage=None,
    )


def _package(
    model: Any,
    framework: str,
    features: list[Feature],
    x: np.ndarray,
    y: np.ndarray,
    *,
    split: int,
    records: list[dict[str, Any]],
    output_dir: Path,
    name: str,
    version: str,
    overwrite: bool,
    lineage: dict[str, Any] | None,
    monitored: bool = False,
) -> BuiltPackage:
    """With `monitored`, the package carries a baseline of the training rows and the holdout's metrics."""
    from sklearn.metrics import roc_auc_score

    # (`records` are then every row: the training rows, and the holdout after `split`)
    holdout = [{**r, "label": int(t)} for r, t in zip(records[split:], y[split:], strict=True)] if monitored else []

    score = _scores(model, framework, x[split:])
    predicted = score >= 0.5
    truth = y[split:] == 1
    metrics = {
        "auc": float(roc_auc_score(y[split:], score)),
        "accuracy": float((predicted == truth).mean()),
        "precision": float((predicted & truth).sum() / max(predicted.sum(), 1)),
        "recall": float((predicted & truth).sum() / max(truth.sum(), 1)),
    }
    return build_package(
        model,
        framework=framework,
        name=name,
        version=version,
        features=features,
        task="binary",
        labels=FRAUD_LABELS,
        sample=records[:64],
        background=records[:256],  # training records: what explanations are relative to
        output_dir=output_dir,
        metrics=metrics,
        lineage=lineage,
        overwrite=overwrite,
        default_prediction=0.0,
        training_data=records[:split] if monitored else None,
        holdout=holdout if monitored else None,
        label_column="label" if monitored else None,
    )


def _scores(model: Any, framework: str, x: np.ndarray) -> np.ndarray:
    if framework == "pytorch":
        import torch

        with torch.no_grad():
            return torch.sigmoid(model(torch.from_numpy(x.astype(np.float32)))).numpy().reshape(-1)
    return np.asarray(model.predict_proba(x))[:, 1]
