"""A package's explainer: chosen and written at packaging (`build_explainer`), loaded by the server
(`Explainer.load`), one artifact either way (explainer.npz beside model.onnx, no pickle).

- tree: the ensemble's root-to-leaf paths (sagegate.explain.tree), taken from the source model by
  shap at packaging; margin space for boosted trees, probability for forests.
- linear: contribution w_j (x_j - mean_j) per model column, base w . mean + b (margin or value).
- permutation: everything else (neural networks, pipelines with their own preprocessing), over a
  background sample of model inputs stored in the artifact (sagegate.explain.sampling).

Contributions of the model's columns are summed back to the raw feature they came from (the
columns of a one-hot feature to that feature). Before a tree or linear explainer is written its
base value + contributions are checked against the packaged ONNX model on the background: an
explainer that does not add up to what the model answers is not written (permutation then).
"""

from __future__ import annotations

import hashlib
import io
import logging
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sagegate.explain.sampling import coalitions_shapley
from sagegate.explain.tree import TreePaths, tree_paths
from sagegate.manifest import ExplainerSpec, Framework, ModelManifest, Task

__all__ = ["BACKGROUND_ROWS", "Explainer", "NoExplainer", "build_explainer", "write_arrays"]

log = logging.getLogger("sagegate.explain")

BACKGROUND_ROWS = 16  # background rows of a permutation explainer (x coalitions per explanation)
IMPORTANCE_ROWS = 64  # rows the global importance of a tree or linear explainer is averaged over
CHECK_TOLERANCE = 1e-3  # float32 ONNX vs the explainer's float64 sum
Model = Callable[[Mapping[str, np.ndarray]], np.ndarray]


class NoExplainer(Exception):
    """The model has no explainer (packaged without one)."""


def write_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> str:
    """An .npz of `arrays` whose bytes depend on the arrays only (numpy's own savez stamps the time);
    answers its sha256."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            data = io.BytesIO()
            np.lib.format.write_array(data, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            archive.writestr(info, data.getvalue())
    path.write_bytes(buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def _column_features(manifest: ModelManifest) -> np.ndarray:
    """Per column of a matrix model's input, the index of the feature it comes from."""
    return np.repeat(np.arange(len(manifest.features)), [f.width for f in manifest.features])


def _players(manifest: ModelManifest) -> dict[str, np.ndarray]:
    """Per model input (as the pipeline names it: the matrix, or each feature), the feature of each
    of its columns."""
    if manifest.inputs == "matrix":
        return {manifest.onnx_input: _column_features(manifest)}
    return {f.name: np.array([i]) for i, f in enumerate(manifest.features)}


@dataclass
class Explainer:
    spec: ExplainerSpec
    manifest: ModelManifest
    arrays: dict[str, np.ndarray]
    model: Model  # the ONNX model's output for inputs (permutation)
    paths: TreePaths | None = None

    @classmethod
    def load(cls, package_dir: Path, manifest: ModelManifest, model: Model) -> Explainer:
        spec = manifest.explainer
        if spec is None:
            raise NoExplainer(f"model {manifest.name} v{manifest.version} was packaged without an explainer")
        with np.load(package_dir / spec.file, allow_pickle=False) as stored:
            arrays = {k: stored[k] for k in stored.files}
        explainer = cls(spec, manifest, arrays, model)
        if spec.method == "tree":
            explainer.paths = _paths_from(arrays, _width(manifest)).prepare()
        return explainer

    def _output_index(self, outputs: int, record_output: np.ndarray | None) -> int:
        """Which output is explained: the only one, a binary model's positive class, or the class the
        record is predicted as."""
        task = self.manifest.outputs.task
        if outputs == 1:
            return 0
        if task is Task.BINARY:
            return 1
        assert record_output is not None
        return int(np.argmax(record_output))

    def explain(self, inputs: Mapping[str, np.ndarray], outputs: np.ndarray | None = None) -> list[dict[str, Any]]:
        """Per record of `inputs` (the model's feed) its explanation; `outputs`, the model's answers
        for them, say which class a multiclass record is explained for (needed for those only)."""
        phis, bases = self.contributions(inputs)
        names = [f.name for f in self.manifest.features]
        labels = self.manifest.outputs.labels or []  # a classifier always has them
        regression = self.manifest.outputs.task is Task.REGRESSION
        found = []
        for r in range(len(phis)):
            k = self._output_index(phis.shape[2], outputs[r] if outputs is not None and outputs.ndim > 1 else None)
            phi = phis[r, :, k]
            base = float(bases[k])
            # a single output of a classifier is its positive class's
            explained = "value" if regression else labels[k] if phis.shape[2] > 1 else labels[-1]
            found.append(
                {
                    "method": self.spec.method,
                    "output_space": self.spec.output_space,
                    "explained": explained,
                    "base_value": base,
                    "output": base + float(phi.sum()),
                    "contributions": dict(zip(names, phi.tolist(), strict=True)),
                }
            )
        return found

    def contributions(self, inputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """([records, features, outputs], base [outputs]) for the model's feed `inputs`."""
        features = len(self.manifest.features)
        if self.spec.method == "permutation":
            background = {k.removeprefix("bg:"): v for k, v in self.arrays.items() if k.startswith("bg:")}
            background = {k: v.astype(object) if v.dtype.kind == "U" else v for k, v in background.items()}
            players = _players(self.manifest)
            n = len(next(iter(inputs.values())))
            phis, base = [], np.zeros(1)
            for r in range(n):
                record = {k: v[r : r + 1].reshape(1, -1) for k, v in inputs.items()}
                phi, base = coalitions_shapley(self.model, record, background, players, features)
                phis.append(phi)
            return np.array(phis).reshape(n, features, -1), base
        matrix = np.asarray(inputs[self.manifest.onnx_input])
        if self.spec.method == "tree":
            assert self.paths is not None
            columns, base = self.paths.shap_values(matrix), self.paths.base
        else:
            coef, intercept, mean = self.arrays["coef"], self.arrays["intercept"], self.arrays["mean"]
            columns = (matrix[:, :, None] - mean[None, :, None]) * coef.T[None, :, :]
            base = coef @ mean + intercept
        owner = np.eye(features)[_column_features(self.manifest)]  # [columns, features]: which feature a column is
        return np.einsum("nwk,wf->nfk", columns, owner), base

    def importance(self, inputs: Mapping[str, np.ndarray]) -> dict[str, float]:
        phis, _ = self.contributions(inputs)
        k = 1 if phis.shape[2] == 2 and self.manifest.outputs.task is Task.BINARY else slice(None)
        mean = np.abs(phis[:, :, k]).reshape(len(phis), len(self.manifest.features), -1).mean(axis=(0, 2))
        return {f.name: round(float(v), 6) for f, v in zip(self.manifest.features, mean, strict=True)}


def _paths_from(arrays: Mapping[str, np.ndarray], width: int) -> TreePaths:
    from sagegate.explain.tree import _shapley_weights

    valid = arrays["valid"]
    return TreePaths(
        features=arrays["features"],
        lower=arrays["lower"],
        upper=arrays["upper"],
        zero=arrays["zero"],
        valid=valid,
        values=arrays["values"],
        weights=_shapley_weights(valid.shape[1], valid.sum(axis=1)),
        base=arrays["base"],
        width=width,
        dtype=arrays["lower"].dtype,
    )


# -- at packaging -----------------------------------------------------------------------------------


def _tree_arrays(model: Any, framework: Framework, width: int) -> tuple[dict[str, np.ndarray], str] | None:
    """The ensemble's paths and its output space, or None where shap cannot read it as trees (or the
    trees split on categories, which the matrix never holds)."""
    if framework not in (Framework.XGBOOST, Framework.LIGHTGBM, Framework.SKLEARN):
        return None
    try:
        import shap  # type: ignore[import-untyped]
    except ImportError:  # the package extra brings it; without it, explanations fall back
        log.warning("shap is not installed: a tree model gets a permutation explainer")
        return None
    try:
        ensemble = shap.TreeExplainer(model).model
    except Exception:  # shap: "Model type not yet supported by TreeExplainer" and the like
        return None
    if any(np.any(t.threshold_types == 1) for t in ensemble.trees):  # 1: a split on categories
        return None
    offset = np.atleast_1d(np.asarray(ensemble.base_offset, dtype=np.float64))
    outputs = len(offset)
    if framework is Framework.XGBOOST and outputs > 1:
        offset = _xgboost_intercepts(model, offset)
    trees = []
    for index, t in enumerate(ensemble.trees):
        values = np.asarray(t.values, dtype=np.float64).reshape(len(t.children_left), -1)
        if values.shape[1] == 1 and outputs > 1:
            # a multiclass booster's trees hold one class each, round by round (tree t: class t % K)
            spread = np.zeros((len(values), outputs))
            spread[:, index % outputs] = values[:, 0]
            values = spread
        elif values.shape[1] != outputs:
            return None
        trees.append(
            {
                "children_left": t.children_left,
                "children_right": t.children_right,
                "features": t.features,
                "thresholds": t.thresholds,
                "values": values,
                "node_sample_weight": t.node_sample_weight,
            }
        )
    paths = tree_paths(
        trees,
        base_offset=offset,
        width=width,
        dtype=ensemble.input_dtype,
    )
    space = {"raw_value": "margin", "log_odds": "margin", "probability": "probability"}.get(
        str(ensemble.tree_output), "margin"
    )
    arrays = {
        "features": paths.features,
        "lower": paths.lower,
        "upper": paths.upper,
        "zero": paths.zero,
        "valid": paths.valid,
        "values": paths.values,
        "base": paths.base,
    }
    return arrays, space


def _xgboost_intercepts(model: Any, offset: np.ndarray) -> np.ndarray:
    """A multiclass booster's intercept per class: XGBoost 2+ keeps one margin per class
    (base_score "[a,b,c]"), where shap repeats the first."""
    import json

    booster = model.get_booster() if hasattr(model, "get_booster") else model
    text = json.loads(booster.save_config())["learner"]["learner_model_param"]["base_score"]
    values = np.array([float(v) for v in text.strip("[]").split(",")], dtype=np.float64)
    return values if len(values) == len(offset) else offset


def _linear_arrays(model: Any, framework: Framework, background: np.ndarray) -> dict[str, np.ndarray] | None:
    if framework is not Framework.SKLEARN or not hasattr(model, "coef_") or not hasattr(model, "intercept_"):
        return None
    from sklearn.linear_model._base import LinearClassifierMixin, LinearModel

    if not isinstance(model, LinearModel | LinearClassifierMixin):
        return None
    coef = np.atleast_2d(np.asarray(model.coef_, dtype=np.float64))
    intercept = np.atleast_1d(np.asarray(model.intercept_, dtype=np.float64))
    if coef.shape[1] != background.shape[1]:
        return None
    return {"coef": coef, "intercept": intercept, "mean": background.astype(np.float64).mean(axis=0)}


def _expected(outputs: np.ndarray, space: str, task: Task) -> np.ndarray:
    """What base + contributions must equal, from the ONNX model's outputs [rows, outputs]: for a
    margin, log-probabilities (multiclass margins are shift-free: compared after centring)."""
    flat: np.ndarray = outputs.reshape(len(outputs), -1)
    if space != "margin" or task is Task.REGRESSION:
        return flat
    p = np.clip(flat, 1e-12, 1.0)
    logs: np.ndarray = np.log(p)
    if task is Task.BINARY:
        odds: np.ndarray = logs[:, 1:2] - logs[:, 0:1]
        return odds
    centred: np.ndarray = logs - logs.mean(axis=1, keepdims=True)
    return centred


def _adds_up(explainer: Explainer, inputs: Mapping[str, np.ndarray], outputs: np.ndarray) -> bool:
    phis, base = explainer.contributions(inputs)
    total = phis.sum(axis=1) + base[None, :]
    task, space = explainer.manifest.outputs.task, explainer.spec.output_space
    expected = _expected(outputs, space, task)
    if space == "margin" and task is Task.MULTICLASS:
        total = total - total.mean(axis=1, keepdims=True)
    elif task is Task.BINARY and total.shape[1] == 1 and expected.shape[1] == 2:
        expected = expected[:, 1:2]  # one output: the positive class's
    if space == "margin":  # only where the probability carries the margin in float32
        outputs = outputs.reshape(len(outputs), -1)
        keep = (outputs.min(axis=1) > 1e-4) & (outputs.max(axis=1) < 1 - 1e-4)
        total, expected = total[keep], expected[keep]
    if total.shape != expected.shape:
        return False
    return bool(np.all(np.abs(total - expected) <= CHECK_TOLERANCE * np.maximum(1.0, np.abs(expected))))


def _spec(method: str, space: str, sha: str, importance: dict[str, float], rows: int) -> ExplainerSpec:
    return ExplainerSpec.model_validate(
        {"method": method, "output_space": space, "sha256": sha, "background_rows": rows, "importance": importance}
    )


def build_explainer(
    model: Any,
    *,
    framework: Framework,
    manifest: ModelManifest,
    background: Mapping[str, np.ndarray],
    onnx_model: Model,
    directory: Path,
) -> ExplainerSpec:
    """Chooses, checks and writes the package's explainer into `directory`; `background` is the
    model's feed for the background records (the training data's, or the sample and the generated
    records when none is given)."""
    outputs = np.asarray(onnx_model(background), dtype=np.float64)
    # rows the model answers with a number only: a base value or an importance of NaN explains nothing
    finite = np.isfinite(outputs.reshape(len(outputs), -1)).all(axis=1)
    background = {k: v[finite] for k, v in background.items()}
    outputs = outputs[finite]
    rows = int(finite.sum())
    if rows == 0:
        raise NoExplainer("the model answers no background record with a number: nothing to explain against")
    file = directory / "explainer.npz"
    matrix = background.get(manifest.onnx_input) if manifest.inputs == "matrix" else None
    candidates: list[tuple[str, dict[str, np.ndarray], str]] = []
    if matrix is not None:
        width = matrix.shape[1]
        tree = _tree_arrays(model, framework, width)
        if tree is not None:
            regression = manifest.outputs.task is Task.REGRESSION
            candidates.append(("tree", tree[0], "value" if regression else tree[1]))
        linear = _linear_arrays(model, framework, matrix)
        if linear is not None:
            classifier = manifest.outputs.task is not Task.REGRESSION
            candidates.append(("linear", linear, "margin" if classifier else "value"))
    for method, arrays, space in candidates:
        draft = Explainer(_spec(method, space, "0" * 64, {}, rows), manifest, arrays, onnx_model)
        if method == "tree":
            draft.paths = _paths_from(arrays, _width(manifest))
        if _adds_up(draft, background, outputs):
            some = {k: v[:IMPORTANCE_ROWS] for k, v in background.items()}
            sha = write_arrays(file, arrays)
            return _spec(method, space, sha, draft.importance(some), rows)
        log.warning("the %s explainer does not add up to the packaged model's outputs: not used", method)
    kept = {k: v[:BACKGROUND_ROWS] for k, v in background.items()}
    stored = {f"bg:{k}": (v.astype(str) if v.dtype == object else v) for k, v in kept.items()}
    space = "value" if manifest.outputs.task is Task.REGRESSION else "probability"
    draft = Explainer(
        _spec("permutation", space, "0" * 64, {}, len(next(iter(kept.values())))), manifest, stored, onnx_model
    )
    sha = write_arrays(file, stored)
    return _spec("permutation", space, sha, draft.importance(kept), draft.spec.background_rows)


def _width(manifest: ModelManifest) -> int:
    """Columns of a matrix model's input."""
    return sum(f.width for f in manifest.features)
