"""Explanations of packaged models (sagegate.explain), as the server computes them from the package:
the method packaging chose, contributions that add up to the source model's own output (its margin,
probability or value: computed by the source library, not by our code), equal to shap.TreeExplainer
on the source model for tree ensembles, and exactly 0 for a feature the model ignores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shap

from sagegate.packaging import build_package
from sagegate.server.model import LoadedModel

WIDTH = 5
MERCHANTS = ["grocery", "travel", "online"]


def _data(n: int = 600, *, seed: int = 0, ignored: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, WIDTH))
    if ignored is not None:
        x[:, ignored] = 0.0  # constant while training: no split, no weight depends on it
    score = x[:, 0] + 0.8 * x[:, 1] * x[:, 2] - 0.5 * x[:, 3] + rng.normal(scale=0.3, size=n)
    return x, score


def _features() -> list[dict[str, Any]]:
    return [{"name": f"f{i}", "type": "float"} for i in range(WIDTH)]


def _records(x: np.ndarray) -> list[dict[str, float]]:
    return [{f"f{i}": float(v) for i, v in enumerate(row)} for row in x]


def _package(tmp_path: Path, model: Any, framework: str, task: str, x: np.ndarray, **extra: Any) -> LoadedModel:
    built = build_package(
        model,
        framework=framework,
        name="m",
        version="1",
        features=extra.pop("features", None) or _features(),
        task=task,
        sample=extra.pop("sample", None) or _records(x[:3]),
        background=extra.pop("background", None) or _records(x[:200]),
        output_dir=tmp_path / "package",
        **extra,
    )
    return LoadedModel.load("m", built.path, ["CPUExecutionProvider"])


def _built(tmp_path: Path, model: Any, framework: str, task: str, x: np.ndarray, name: str = "p", **extra: Any) -> Any:
    """build_package with this file's features and sample."""
    return build_package(
        model,
        framework=framework,
        name="m",
        version="1",
        features=_features(),
        task=task,
        sample=_records(x[:3]),
        output_dir=tmp_path / name,
        **extra,
    )


def _explained(loaded: LoadedModel, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return loaded.explain_rows(loaded.pipeline.rows_from_records(records))


def _totals(explanations: list[dict[str, Any]]) -> np.ndarray:
    return np.array([e["base_value"] + sum(e["contributions"].values()) for e in explanations])


def _contributions(explanations: list[dict[str, Any]], names: list[str]) -> np.ndarray:
    return np.array([[e["contributions"][n] for n in names] for e in explanations])


NAMES = [f"f{i}" for i in range(WIDTH)]


# -- tree ensembles: exact, the source's TreeSHAP -----------------------------------------------------


def _tree_models() -> list[tuple[str, Any, str, str]]:
    import lightgbm
    import xgboost
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier

    return [
        ("xgboost binary", xgboost.XGBClassifier(n_estimators=60, max_depth=4), "xgboost", "binary"),
        ("xgboost regression", xgboost.XGBRegressor(n_estimators=60, max_depth=4), "xgboost", "regression"),
        ("lightgbm binary", lightgbm.LGBMClassifier(n_estimators=40, num_leaves=15, verbose=-1), "lightgbm", "binary"),
        ("random forest", RandomForestClassifier(n_estimators=30, max_depth=5, random_state=0), "sklearn", "binary"),
        ("sklearn boosting", GradientBoostingRegressor(n_estimators=40, max_depth=3), "sklearn", "regression"),
    ]


def _source_output(model: Any, x: np.ndarray, space: str) -> np.ndarray:
    """The source library's own output in the explainer's output space."""
    if space == "value":
        return np.asarray(model.predict(x), dtype=np.float64)
    if space == "probability":
        return np.asarray(model.predict_proba(x)[:, 1], dtype=np.float64)
    if hasattr(model, "get_booster"):
        return np.asarray(model.predict(x, output_margin=True), dtype=np.float64)
    if hasattr(model, "booster_"):
        return np.asarray(model.predict(x, raw_score=True), dtype=np.float64)
    return np.asarray(model.decision_function(x), dtype=np.float64)


@pytest.mark.parametrize(("case", "model", "framework", "task"), _tree_models(), ids=lambda v: str(v)[:20])
def test_tree_ensembles_are_explained_exactly_as_shap_explains_the_source(
    tmp_path: Path, case: str, model: Any, framework: str, task: str
) -> None:
    x, score = _data()
    y = score if task == "regression" else (score > 0).astype(int)
    model.fit(x.astype(np.float32), y)
    loaded = _package(tmp_path, model, framework, task, x)
    assert loaded.manifest.explainer is not None and loaded.manifest.explainer.method == "tree"
    space = loaded.manifest.explainer.output_space
    assert space == ("value" if task == "regression" else "probability" if case == "random forest" else "margin")

    fresh, _ = _data(40, seed=1)
    explanations = _explained(loaded, _records(fresh))
    ours = _contributions(explanations, NAMES)
    reference = shap.TreeExplainer(model).shap_values(fresh.astype(np.float32))
    reference = np.asarray(reference)
    if reference.ndim == 3:  # (records, features, classes) for a forest's probabilities
        reference = reference[:, :, 1]
    np.testing.assert_allclose(ours, reference, atol=1e-4)
    np.testing.assert_allclose(_totals(explanations), _source_output(model, fresh.astype(np.float32), space), atol=1e-4)


def test_a_feature_a_tree_model_never_splits_on_contributes_nothing(tmp_path: Path) -> None:
    import xgboost

    x, score = _data(ignored=3)
    model = xgboost.XGBClassifier(n_estimators=40, max_depth=4).fit(x, (score > 0).astype(int))
    loaded = _package(tmp_path, model, "xgboost", "binary", x)
    fresh, _ = _data(30, seed=2)  # f3 varies now
    contributions = _contributions(_explained(loaded, _records(fresh)), NAMES)
    assert np.all(contributions[:, 3] == 0.0)
    assert np.abs(contributions[:, 0]).max() > 0.1


def _ignoring_models() -> list[tuple[str, Any, str, str]]:
    import lightgbm
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegression

    return [
        ("lightgbm", lightgbm.LGBMRegressor(n_estimators=40, num_leaves=15, verbose=-1), "lightgbm", "regression"),
        ("random forest", RandomForestRegressor(n_estimators=20, max_depth=5, random_state=0), "sklearn", "regression"),
        ("sklearn boosting", GradientBoostingClassifier(n_estimators=30, max_depth=3), "sklearn", "binary"),
        ("logistic regression", LogisticRegression(), "sklearn", "binary"),
    ]


@pytest.mark.parametrize(("case", "model", "framework", "task"), _ignoring_models(), ids=lambda v: str(v)[:20])
def test_a_feature_the_model_ignores_contributes_nothing(
    tmp_path: Path, case: str, model: Any, framework: str, task: str
) -> None:
    """f3 is constant while a tree model trains (no split uses it); the logistic regression's weight
    of f3 is set to 0. Explained where f3 varies, it gets exactly 0 and the rest still add up to the
    source's own output."""
    x, score = _data(ignored=3 if case != "logistic regression" else None)
    model.fit(x.astype(np.float32), score if task == "regression" else (score > 0).astype(int))
    if case == "logistic regression":
        model.coef_[0, 3] = 0.0
    loaded = _package(tmp_path, model, framework, task, x)
    assert loaded.manifest.explainer is not None
    assert loaded.manifest.explainer.method == ("linear" if case == "logistic regression" else "tree")
    fresh, _ = _data(30, seed=10)  # f3 varies now
    explanations = _explained(loaded, _records(fresh))
    contributions = _contributions(explanations, NAMES)
    assert np.all(contributions[:, 3] == 0.0)
    assert np.abs(contributions[:, 0]).max() > 0.05  # a used feature does contribute
    space = loaded.manifest.explainer.output_space
    np.testing.assert_allclose(_totals(explanations), _source_output(model, fresh.astype(np.float32), space), atol=1e-4)


def test_feature_importance_is_the_mean_absolute_shap_value_over_the_background(tmp_path: Path) -> None:
    """The manifest's importance, for a tree and a linear model, against shap's values on the source
    over the background rows it is averaged over (the first IMPORTANCE_ROWS)."""
    import xgboost
    from sklearn.linear_model import LogisticRegression

    from sagegate.explain.explainer import IMPORTANCE_ROWS

    x, score = _data()
    y = (score > 0).astype(int)
    background = x[:100]
    tree = xgboost.XGBClassifier(n_estimators=30, max_depth=3).fit(x.astype(np.float32), y)
    linear = LogisticRegression().fit(x, y)
    references = {
        "tree": shap.TreeExplainer(tree).shap_values(background[:IMPORTANCE_ROWS].astype(np.float32)),
        "linear": shap.LinearExplainer(linear, background).shap_values(background[:IMPORTANCE_ROWS]),
    }
    for name, model, framework in (("tree", tree, "xgboost"), ("linear", linear, "sklearn")):
        built = _built(tmp_path, model, framework, "binary", x, name, background=_records(background))
        assert built.manifest.explainer is not None and built.manifest.explainer.method == name
        importance = built.manifest.explainer.importance
        expected = np.abs(np.asarray(references[name])).mean(axis=0)
        np.testing.assert_allclose([importance[n] for n in NAMES], expected, atol=1e-5, err_msg=name)


def test_one_hot_columns_are_summed_back_to_their_feature(tmp_path: Path) -> None:
    """merchant is three one-hot columns of the model's matrix; its explanation is one number, the
    sum of shap's values of those columns, and the whole still adds up to the margin."""
    import xgboost

    rng = np.random.default_rng(3)
    n = 500
    amount = rng.normal(size=n)
    merchant = rng.integers(0, 3, n)
    margin = amount + np.array([0.0, 1.5, -1.0])[merchant]
    matrix = np.column_stack([amount, np.eye(3)[merchant]]).astype(np.float32)
    model = xgboost.XGBClassifier(n_estimators=40, max_depth=3).fit(matrix, (margin > 0).astype(int))
    features = [
        {"name": "amount", "type": "float"},
        {"name": "merchant", "type": "categorical", "categories": MERCHANTS, "transforms": [{"kind": "one_hot"}]},
    ]
    records = [{"amount": float(a), "merchant": MERCHANTS[m]} for a, m in zip(amount, merchant, strict=True)]
    loaded = _package(
        tmp_path, model, "xgboost", "binary", matrix, features=features, sample=records[:3], background=records[:200]
    )
    explanations = _explained(loaded, records[:50])
    assert set(explanations[0]["contributions"]) == {"amount", "merchant"}
    reference = shap.TreeExplainer(model).shap_values(matrix[:50])
    np.testing.assert_allclose(_contributions(explanations, ["amount"])[:, 0], reference[:, 0], atol=1e-4)
    np.testing.assert_allclose(
        _contributions(explanations, ["merchant"])[:, 0], reference[:, 1:].sum(axis=1), atol=1e-4
    )
    np.testing.assert_allclose(_totals(explanations), model.predict(matrix[:50], output_margin=True), atol=1e-4)


# -- linear models: exact closed form ------------------------------------------------------------------


def test_a_logistic_regression_is_explained_in_log_odds_exactly(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    x, score = _data()
    model = LogisticRegression().fit(x, (score > 0).astype(int))
    # 100 background rows: shap's masker keeps at most 100 (it samples more)
    loaded = _package(tmp_path, model, "sklearn", "binary", x, background=_records(x[:100]))
    assert loaded.manifest.explainer is not None
    assert (loaded.manifest.explainer.method, loaded.manifest.explainer.output_space) == ("linear", "margin")
    fresh, _ = _data(30, seed=4)
    explanations = _explained(loaded, _records(fresh))
    np.testing.assert_allclose(_totals(explanations), model.decision_function(fresh), atol=1e-4)
    # each contribution is w_j (x_j - mean_j) over the background (shap's LinearExplainer: interventional)
    reference = shap.LinearExplainer(model, x[:100]).shap_values(fresh)
    np.testing.assert_allclose(_contributions(explanations, NAMES), reference, atol=1e-4)


def test_a_linear_regression_that_ignores_a_feature_gives_it_nothing(tmp_path: Path) -> None:
    from sklearn.linear_model import LinearRegression

    x, score = _data()
    model = LinearRegression().fit(x, score)
    model.coef_[2] = 0.0  # this model ignores f2
    loaded = _package(tmp_path, model, "sklearn", "regression", x)
    fresh, _ = _data(20, seed=5)
    explanations = _explained(loaded, _records(fresh))
    contributions = _contributions(explanations, NAMES)
    assert np.all(contributions[:, 2] == 0.0)
    np.testing.assert_allclose(_totals(explanations), model.predict(fresh), atol=1e-4)


# -- everything else: Shapley values over the background -----------------------------------------------


def _mlp(x: np.ndarray, y: np.ndarray, *, ignored: int | None = None) -> Any:
    from sklearn.neural_network import MLPClassifier

    model = MLPClassifier(hidden_layer_sizes=(16, 8), max_iter=400, random_state=0).fit(x, y)
    if ignored is not None:
        model.coefs_[0][ignored, :] = 0.0  # no path from this input
    return model


def test_an_mlp_gets_exact_shapley_values_that_add_up_to_its_probability(tmp_path: Path) -> None:
    x, score = _data()
    model = _mlp(x, (score > 0).astype(int), ignored=4)
    loaded = _package(tmp_path, model, "sklearn", "binary", x)
    assert loaded.manifest.explainer is not None
    assert (loaded.manifest.explainer.method, loaded.manifest.explainer.output_space) == ("permutation", "probability")
    fresh, _ = _data(10, seed=6)
    explanations = _explained(loaded, _records(fresh))
    np.testing.assert_allclose(_totals(explanations), model.predict_proba(fresh)[:, 1], atol=1e-4)
    assert np.all(_contributions(explanations, NAMES)[:, 4] == 0.0)
    # the base value is the model's mean answer over the background it keeps
    assert explanations[0]["base_value"] == pytest.approx(
        float(np.mean(model.predict_proba(x[: loaded.manifest.explainer.background_rows])[:, 1])), abs=1e-4
    )
    # exact (5 features: every coalition): the same values shap's exact explainer finds for this game
    background = x[: loaded.manifest.explainer.background_rows]
    reference = shap.explainers.Exact(lambda v: model.predict_proba(v)[:, 1], background)(fresh).values
    np.testing.assert_allclose(_contributions(explanations, NAMES), reference, atol=1e-4)


def test_many_features_are_sampled_by_permutations_and_still_add_up(tmp_path: Path) -> None:
    from sklearn.neural_network import MLPRegressor

    rng = np.random.default_rng(7)
    x = rng.normal(size=(400, 14))
    y = x[:, 0] - 2 * x[:, 5] + x[:, 7] * x[:, 8]
    model = MLPRegressor(hidden_layer_sizes=(16,), max_iter=300, random_state=0).fit(x, y)
    model.coefs_[0][13, :] = 0.0
    features = [{"name": f"g{i}", "type": "float"} for i in range(14)]
    records = [{f"g{i}": float(v) for i, v in enumerate(row)} for row in x]
    loaded = _package(
        tmp_path, model, "sklearn", "regression", x, features=features, sample=records[:3], background=records[:100]
    )
    explanations = _explained(loaded, records[:8])
    np.testing.assert_allclose(_totals(explanations), model.predict(x[:8]), atol=1e-4)
    assert all(e["contributions"]["g13"] == 0.0 for e in explanations)


def test_a_pipeline_with_its_own_encoding_is_explained_per_raw_feature(tmp_path: Path) -> None:
    """A columns model (a scikit-learn Pipeline with a ColumnTransformer): the permutation explainer
    mixes the raw inputs, text included."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(8)
    frame = pd.DataFrame({"amount": rng.normal(size=400), "merchant": rng.choice(MERCHANTS, 400)})
    y = ((frame.amount + (frame.merchant == "travel") * 1.5) > 0.5).astype(int)
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), ["amount"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["merchant"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression()),
        ]
    ).fit(frame, y)
    features = [
        {"name": "amount", "type": "float"},
        {"name": "merchant", "type": "categorical", "categories": MERCHANTS},
    ]
    records = frame.to_dict("records")
    loaded = _package(
        tmp_path,
        model,
        "sklearn",
        "binary",
        frame.to_numpy(),
        features=features,
        sample=records[:3],
        background=records[:100],
    )
    assert loaded.manifest.inputs == "columns"
    assert loaded.manifest.explainer is not None and loaded.manifest.explainer.method == "permutation"
    explanations = _explained(loaded, records[:10])
    np.testing.assert_allclose(_totals(explanations), model.predict_proba(frame.iloc[:10])[:, 1], atol=1e-4)


# -- the package -------------------------------------------------------------------------------------


def test_the_explainer_is_part_of_the_package_and_its_bytes_are_stable(tmp_path: Path) -> None:
    import xgboost

    x, score = _data()
    model = xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(x, (score > 0).astype(int))
    first = _built(tmp_path, model, "xgboost", "binary", x, "a", background=_records(x[:100]))
    second = _built(tmp_path, model, "xgboost", "binary", x, "b", background=_records(x[:100]))
    assert (first.path / "explainer.npz").read_bytes() == (second.path / "explainer.npz").read_bytes()
    assert first.archive_sha256 == second.archive_sha256
    import tarfile

    with tarfile.open(first.archive) as archive:
        assert "explainer.npz" in archive.getnames()
    importance = first.manifest.explainer.importance if first.manifest.explainer else {}
    assert max(importance, key=lambda k: importance[k]) == "f0"  # the strongest feature of _data


def test_a_modified_explainer_is_refused_at_load(tmp_path: Path) -> None:
    from sagegate.server.exceptions import ModelLoadError

    x, score = _data()
    from sklearn.linear_model import LinearRegression

    built = _built(tmp_path, LinearRegression().fit(x, score), "sklearn", "regression", x)
    with (built.path / "explainer.npz").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelLoadError, match=r"explainer\.npz has sha256"):
        LoadedModel.load("m", built.path, ["CPUExecutionProvider"])


def test_a_model_packaged_without_an_explainer_says_so(tmp_path: Path) -> None:
    from sklearn.linear_model import LinearRegression

    from sagegate.server.exceptions import NoExplainer

    x, score = _data()
    built = _built(tmp_path, LinearRegression().fit(x, score), "sklearn", "regression", x, explain=False)
    assert built.manifest.explainer is None and not (built.path / "explainer.npz").exists()
    loaded = LoadedModel.load("m", built.path, ["CPUExecutionProvider"])
    with pytest.raises(NoExplainer, match="has no explainer"):
        _explained(loaded, _records(x[:1]))


def test_the_server_explains_without_shap(tmp_path: Path) -> None:
    """shap (with numba and llvmlite, ~210 MB) is a packaging dependency: loading and explaining a
    tree package must not import it, so the server container does without it."""
    import subprocess
    import sys

    import xgboost

    x, score = _data()
    model = xgboost.XGBClassifier(n_estimators=10, max_depth=3).fit(x, (score > 0).astype(int))
    built = _built(tmp_path, model, "xgboost", "binary", x)
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from sagegate.server.model import LoadedModel\n"
        f"m = LoadedModel.load('m', Path({str(built.path)!r}), ['CPUExecutionProvider'])\n"
        f"e = m.explain_rows(m.pipeline.rows_from_records({_records(x[:2])!r}))\n"
        "assert e[0]['method'] == 'tree', e\n"
        "print(sorted(n for n in ('shap', 'numba', 'llvmlite', 'sklearn', 'xgboost') if n in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def _installed_closure(requirements: list[str], extras: dict[str, list[str]]) -> set[str]:
    """The distributions `requirements` install, transitively (sagegate[...] expanded from
    pyproject's extras, every other one from its installed metadata and the extras it is asked with)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: set[str] = set()
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        if name == "sagegate":
            todo += [(Requirement(r), "") for e in requirement.extras for r in extras[e]]
            continue
        key = f"{name}[{','.join(sorted(requirement.extras))}]"
        if key in found:
            continue
        found |= {key, name}
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [(Requirement(r), e) for r in requires for e in ("", *requirement.extras)]
    return {n for n in found if "[" not in n}


def test_shap_is_in_the_packaging_extra_only_never_in_the_lambda_bundle_or_the_serving_containers() -> None:
    """shap brings numba and llvmlite (~210 MB; ~490 MB with the scipy, scikit-learn and pandas it
    requires): what the gateway Lambda bundles and the inference and batch containers install must
    not pull it in, transitively, whatever else changes; the gateway's modules never import it."""
    import re
    import subprocess
    import sys
    import tomllib

    from infra.constructs.bundling import lambda_requirements

    root = Path(__file__).resolve().parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    heavy = {"shap", "numba", "llvmlite"}
    assert heavy <= _installed_closure(extras["package"], extras)  # the closure does see them
    assert not heavy & _installed_closure(lambda_requirements(), extras)
    for container, extra in (("inference", "server"), ("batch", "batch")):
        dockerfile = (root / "containers" / container / "Dockerfile").read_text()
        assert re.findall(r'pip install "\.\[([a-z,-]+)\]"', dockerfile) == [extra], container
        assert not heavy & _installed_closure([*project["dependencies"], *extras[extra]], extras), container
    probe = (
        "import sys, sagegate.gateway.app, sagegate.gateway.predictor; "
        "print(sorted(m for m in ('shap', 'numba', 'sagegate.explain') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=root, check=True)
    assert done.stdout.strip() == "[]"


def test_a_multiclass_model_is_explained_for_the_class_it_predicts(tmp_path: Path) -> None:
    import xgboost

    x, score = _data()
    y = np.digitize(score, [-0.5, 0.5])  # three classes
    model = xgboost.XGBClassifier(n_estimators=30, max_depth=3).fit(x.astype(np.float32), y)
    loaded = _package(tmp_path, model, "xgboost", "multiclass", x)
    assert loaded.manifest.explainer is not None and loaded.manifest.explainer.method == "tree"
    fresh, _ = _data(20, seed=9)
    explanations = _explained(loaded, _records(fresh))
    predicted = model.predict(fresh.astype(np.float32))
    labels = loaded.manifest.outputs.labels or []
    assert [e["explained"] for e in explanations] == [labels[c] for c in predicted]
    margins = model.predict(fresh.astype(np.float32), output_margin=True)[np.arange(20), predicted]
    np.testing.assert_allclose(_totals(explanations), margins, atol=1e-4)
    reference = np.asarray(shap.TreeExplainer(model).shap_values(fresh.astype(np.float32)))  # (n, features, classes)
    np.testing.assert_allclose(_contributions(explanations, NAMES), reference[np.arange(20), :, predicted], atol=1e-4)


def test_the_waterfall_runs_from_the_base_value_to_the_output_largest_contribution_first() -> None:
    from rich.console import Console

    from sagegate.explain.waterfall import waterfall

    explanation = {
        "method": "tree",
        "output_space": "margin",
        "explained": "fraud",
        "base_value": -1.5,
        "output": 0.25,
        "contributions": {"amount": 2.0, "hour": -0.5, "merchant": 0.25, "channel": 0.0},
    }
    console = Console(record=True, width=160, color_system=None)
    console.print(waterfall(explanation, {"amount": 980, "hour": 3, "merchant": "travel", "channel": "web"}))
    lines = console.export_text().splitlines()
    assert "why (tree, margin of fraud)" in lines[0]
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines if line.startswith("│")]
    assert [r[0] for r in rows] == ["base value", "amount", "hour", "merchant", "channel", "output"]
    assert [r[1] for r in rows] == ["", "980", "3", "travel", "web", ""]
    assert [r[2] for r in rows] == ["", "+2.0000", "-0.5000", "+0.2500", "+0.0000", ""]
    assert [r[4] for r in rows] == ["-1.5000", "0.5000", "0.0000", "0.2500", "0.2500", "0.2500"]
    assert len(rows[1][3]) == 30 and len(rows[2][3]) == 8 and rows[4][3] == ""  # bars to scale
