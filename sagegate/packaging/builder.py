"""`build_package`: a trained model in, a model package out that is provably the same model (or
nothing at all).

Before anything is written the ONNX model and the source model answer the same records: the sample,
and records generated across the declared ranges and categories of every feature (optional ones
sometimes missing). Probabilities or values must agree within the tolerance, and the labels they
make must be the same; the labels must be the model's own classes in the model's order
(`classes_`), or are taken from them. The same model and spec always give the same bytes
(model.onnx and its sha256): converters that name graphs at random are renamed.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sagegate.features import FeaturePipeline, RecordError
from sagegate.manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    Feature,
    FeatureType,
    Framework,
    Lineage,
    ModelManifest,
    Monitoring,
    Outputs,
    Task,
    one_of,
)
from sagegate.monitoring.baseline import BASELINE_FILE
from sagegate.packaging.archive import sha256_file, write_archive
from sagegate.packaging.converters import Converted, check_columns, convert, shape_of
from sagegate.packaging.exceptions import PackageError, ParityError

__all__ = ["BuiltPackage", "build_package", "generated_records", "onnx_predict"]

SAMPLE_KEPT = 5  # sample records stored in the manifest (all given are used for the parity check)
GENERATED = 256  # records generated across the features' declared values for the parity check


@dataclass(frozen=True)
class BuiltPackage:
    path: Path
    manifest: ModelManifest
    archive: Path
    archive_sha256: str
    max_abs_diff: float  # largest difference between source and ONNX outputs on the checked records
    checked_records: int = 0
    baseline: Path | None = None  # the monitoring baseline (None: no training data was given)


def onnx_predict(onnx_model: bytes | Path, inputs: Mapping[str, np.ndarray], output: str) -> np.ndarray:
    """The ONNX model's output for these inputs (a model given as a path is loaded from it)."""
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(onnx_model) if isinstance(onnx_model, Path) else onnx_model, providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    if output not in names:
        raise PackageError(f"the ONNX model has no output {output!r} (it has {', '.join(names)})")
    try:
        result = session.run([output], dict(inputs))[0]
    except Exception as exc:  # ORT's error names the input or the shape
        raise PackageError(
            f"the ONNX model cannot run on the features' inputs: {str(exc).splitlines()[0][:300]}"
        ) from exc
    return np.asarray(result, dtype=np.float64)


def _choice(enum: type[Any], value: Any, what: str) -> Any:
    try:
        return one_of(enum, value, what)
    except ValueError as exc:
        raise PackageError(str(exc)) from None


def generated_records(
    features: Sequence[Feature], sample: Sequence[Mapping[str, Any]], *, n: int = GENERATED, seed: int = 0
) -> list[dict[str, Any]]:
    """Valid records spread over what each feature declares: numbers across [minimum, maximum] (or
    around the sample's values where unbounded), every category, both booleans, unknown text for a
    string feature, and an optional feature sometimes left out."""
    rng = np.random.default_rng(seed)
    records: list[dict[str, Any]] = [{} for _ in range(n)]
    for feature in features:
        seen = [r[feature.name] for r in sample if isinstance(r.get(feature.name), int | float)]
        values: list[Any]
        if feature.type is FeatureType.BOOL:
            values = [bool(v) for v in rng.integers(0, 2, n)]
        elif feature.type.is_numeric:
            spread = max([abs(float(v)) for v in seen] + [1.0]) * 3
            lo = feature.minimum if feature.minimum is not None else min([float(v) for v in seen] + [0.0]) - spread
            hi = feature.maximum if feature.maximum is not None else max([float(v) for v in seen] + [0.0]) + spread
            if feature.type is FeatureType.INT:
                values = [int(v) for v in rng.integers(int(np.ceil(lo)), int(np.floor(hi)) + 1, n)]
            else:
                values = [float(v) for v in rng.uniform(lo, hi, n)]
        else:
            choices = list(feature.categories or feature.encoded_categories)
            if feature.type is FeatureType.STRING:
                choices.append("unseen-value")
            values = [choices[i % len(choices)] for i in rng.permutation(n)]
        optional = not feature.required or feature.default is not None
        for record, value, drop in zip(records, values, rng.random(n) < 0.2, strict=True):
            if not (optional and drop):
                record[feature.name] = value
    return records


def build_package(
    model: Any,
    *,
    framework: Framework | str,
    name: str,
    version: str,
    features: Sequence[Feature | Mapping[str, Any]],
    task: Task | str,
    labels: Sequence[str] | None = None,
    threshold: float = 0.5,
    sample: Sequence[Mapping[str, Any]],
    output_dir: Path,
    metrics: Mapping[str, float] | None = None,
    lineage: Lineage | Mapping[str, Any] | None = None,
    description: str | None = None,
    entity_key: str | None = None,
    default_prediction: float | str | None = None,
    tolerance: float = 1e-3,
    torch_output: str = "logits",
    overwrite: bool = False,
    training_data: Any = None,
    holdout: Any = None,
    label_column: str | None = None,
    monitoring: Monitoring | Mapping[str, Any] | None = None,
    explain: bool = True,
    background: Sequence[Mapping[str, Any]] | None = None,
) -> BuiltPackage:
    """Converts `model` to ONNX, checks it against the source, and writes the package.

    With `training_data` (a DataFrame, an array whose columns are the features in order, or records)
    the package carries a monitoring baseline: its profile and the packaged model's scores on it,
    and with a labelled `holdout` (and its `label_column`) the model's metrics there. `monitoring`
    sets the checks' thresholds and windows (sagegate.manifest.Monitoring).

    With `explain` the package gets an explainer (sagegate.explain): exact for tree ensembles and
    linear models, Shapley values over a background sample otherwise. `background`: records like the
    training data, which explanations are relative to (their mean output is the base value); by
    default the first rows of `training_data`, else the sample and the generated records.

    Raises PackageError (one line) on any problem; the output directory is then left untouched.
    """
    framework_: Framework = _choice(Framework, framework, "framework")
    task_: Task = _choice(Task, task, "task")
    if not sample:
        raise PackageError("a sample input (at least one record) is required")
    parsed = [f if isinstance(f, Feature) else Feature.model_validate(f) for f in features]
    shape = shape_of(model, framework_, parsed, FeaturePipeline(parsed).width)
    plain = [f.name for f in parsed if not f.type.is_numeric and f.encoding is None]
    if plain and not shape.columns:
        raise PackageError(f"feature {plain[0]!r}: a text feature needs a one_hot or ordinal step for this model")
    check_columns(model, framework_, parsed, shape)
    pipeline = FeaturePipeline(parsed, input_name=shape.input_name, input_types=shape.columns)
    try:
        sample_rows = pipeline.rows_from_records(sample)
    except RecordError as exc:
        raise PackageError(f"sample {exc}") from None
    records = [*sample, *generated_records(parsed, sample)]
    inputs = pipeline.inputs([*sample_rows, *pipeline.rows_from_records(records[len(sample) :])])

    converted = convert(model, framework_, task_, shape, torch_output=torch_output)
    chosen = _labels(task_, labels, converted)
    outputs = Outputs(task=task_, labels=chosen, threshold=threshold, onnx_output=converted.output)
    onnx_model = _canonical(converted.onnx, name)
    renamed = _onnx_names(onnx_model, shape.columns)
    got = onnx_predict(onnx_model, {renamed.get(k, k): v for k, v in inputs.items()}, converted.output)
    _check_shape(got, task_, outputs.labels, len(records))
    max_diff = _parity(converted, inputs, got, outputs, framework=framework_, tolerance=tolerance)

    digest = hashlib.sha256(onnx_model).hexdigest() if isinstance(onnx_model, bytes) else sha256_file(onnx_model)
    settings = Monitoring.model_validate(monitoring) if isinstance(monitoring, Mapping) else monitoring
    baseline = None
    if training_data is not None:
        from sagegate.packaging.baseline import compute_baseline

        def predict(batch: dict[str, np.ndarray]) -> np.ndarray:
            return onnx_predict(onnx_model, {renamed.get(k, k): v for k, v in batch.items()}, converted.output)

        baseline = compute_baseline(
            parsed, outputs, pipeline, predict, training=training_data, holdout=holdout, label_column=label_column
        ).dumps()
        settings = (settings or Monitoring()).model_copy(
            update={"baseline": BASELINE_FILE, "baseline_sha256": hashlib.sha256(baseline.encode()).hexdigest()}
        )
    elif holdout is not None:
        raise PackageError("a holdout is measured against a baseline: give the training data too")
    manifest = ModelManifest(
        name=name,
        version=version,
        framework=framework_,
        description=description,
        lineage=Lineage.model_validate(lineage) if isinstance(lineage, Mapping) else lineage,
        features=parsed,
        outputs=outputs,
        metrics=dict(metrics or {}),
        sample=[dict(r) for r in sample[:SAMPLE_KEPT]],
        sha256=digest,
        data_files={f.name: sha256_file(f) for f in converted.data_files},
        onnx_input=shape.input_name,
        inputs="columns" if shape.columns else "matrix",
        input_types=shape.columns,
        input_names=renamed,
        entity_key=entity_key,
        default_prediction=default_prediction,
        monitoring=settings,
    )
    with tempfile.TemporaryDirectory(prefix="sagegate-explain-") as scratch:
        extra = list(converted.data_files)
        if explain:
            manifest = _with_explainer(
                model,
                manifest,
                pipeline,
                onnx_model,
                background=background or _background_of(training_data, parsed) or records,
                names=renamed,
                directory=Path(scratch),
            )
            extra.append(Path(scratch) / manifest.explainer.file)  # type: ignore[union-attr]
        path, archive = _write(output_dir, onnx_model, extra, manifest, overwrite, baseline=baseline)
    return BuiltPackage(
        path,
        manifest,
        archive,
        sha256_file(archive),
        max_diff,
        len(records),
        baseline=path / BASELINE_FILE if baseline is not None else None,
    )


BACKGROUND_KEPT = 256  # training rows an explainer's background is taken from


def _background_of(training: Any, features: Sequence[Feature]) -> list[dict[str, Any]]:
    """The first rows of the training data as records (without missing values: the pipeline
    fills what it may), or none."""
    if training is None:
        return []
    from sagegate.monitoring.baseline import as_columns

    try:
        columns = as_columns(training, [f.name for f in features])
    except ValueError as exc:
        raise PackageError(f"training data: {exc}") from None
    n = min(BACKGROUND_KEPT, min((len(v) for v in columns.values()), default=0))
    rows = []
    for i in range(n):
        row = {}
        for name, values in columns.items():
            value = values[i]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            row[name] = value.item() if hasattr(value, "item") else value
        rows.append(row)
    return rows


def _with_explainer(
    model: Any,
    manifest: ModelManifest,
    pipeline: FeaturePipeline,
    onnx_model: bytes | Path,
    *,
    background: Sequence[Mapping[str, Any]],
    names: Mapping[str, str],
    directory: Path,
) -> ModelManifest:
    import onnxruntime as ort

    from sagegate.explain import NoExplainer, build_explainer

    try:
        rows = pipeline.rows_from_records(background)
    except RecordError as exc:
        raise PackageError(f"background {exc}") from None
    session = ort.InferenceSession(
        str(onnx_model) if isinstance(onnx_model, Path) else onnx_model, providers=["CPUExecutionProvider"]
    )
    output = manifest.outputs.onnx_output

    def run(feed: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.asarray(session.run([output], {names.get(k, k): v for k, v in feed.items()})[0])

    try:
        spec = build_explainer(
            model,
            framework=manifest.framework,
            manifest=manifest,
            background=pipeline.inputs(rows),
            onnx_model=run,
            directory=directory,
        )
    except NoExplainer as exc:
        raise PackageError(f"no explainer can be made ({exc}); package with explanations off") from None
    return manifest.model_copy(update={"explainer": spec})


def _labels(task: Task, given: Sequence[str] | None, converted: Converted) -> list[str] | None:
    """The labels, in the order of the model's probabilities: the model's own classes decide."""
    if task is Task.REGRESSION:
        if given:
            raise PackageError("a regression model has no labels")
        return None
    classes = converted.classes
    if classes is None:
        if given and converted.class_count is not None and converted.class_count != len(given):
            raise PackageError(f"the model predicts {converted.class_count} classes but {len(given)} labels were given")
        return list(given) if given else None
    named = [str(c) for c in classes]
    if not given:
        return named
    given = list(given)
    if len(given) != len(classes):
        raise PackageError(f"the model predicts {len(classes)} classes but {len(given)} labels were given: {named}")
    textual = any(not isinstance(c, int | np.integer) for c in classes)  # (booleans are 0 and 1)
    if (textual and given != named) or (not textual and set(given) == set(named) and given != named):
        raise PackageError(
            f"the labels {given} are not the model's classes in its order {named} (classes_): every answer would be"
            " labelled wrong; give them in that order, or leave labels out to take them from the model"
        )
    return given


def _parity(
    converted: Converted,
    inputs: Mapping[str, np.ndarray],
    got: np.ndarray,
    outputs: Outputs,
    *,
    framework: Framework,
    tolerance: float,
) -> float:
    if converted.source_predict is None:
        return 0.0
    expected = converted.source_predict(dict(inputs)).reshape(got.shape)
    max_diff = float(np.max(np.abs(expected - got))) if got.size else 0.0
    if not max_diff <= tolerance:
        worst = int(np.unravel_index(np.argmax(np.abs(expected - got)), got.shape)[0])
        raise ParityError(
            f"ONNX and {framework} outputs differ by {max_diff:.3g} (record {worst} of {len(got)} checked; "
            f"tolerance {tolerance:g}); the package was not written"
        )
    if outputs.task is not Task.REGRESSION:
        if outputs.task is Task.BINARY:
            chosen, expected_choice = got[:, 1] >= outputs.threshold, expected[:, 1] >= outputs.threshold
            close = np.abs(got[:, 1] - outputs.threshold) <= tolerance
        else:
            chosen, expected_choice = got.argmax(axis=1), expected.argmax(axis=1)
            ranked = np.sort(got, axis=1)
            close = ranked[:, -1] - ranked[:, -2] <= tolerance
        differ = (chosen != expected_choice) & ~close
        if differ.any():
            raise ParityError(
                f"ONNX and {framework} label {int(differ.sum())} of {len(got)} checked records differently; "
                "the package was not written"
            )
    return max_diff


def _onnx_names(model: bytes | Path, columns: Mapping[str, str] | None) -> dict[str, str]:
    """For a columns model, the graph's input names that differ from the features' (a converter may
    rename "mean radius" to "mean_radius"): the graph's inputs follow the features' order."""
    if not columns or isinstance(model, Path):
        return {}
    import onnx

    proto = onnx.load_model_from_string(model)
    initializers = {i.name for i in proto.graph.initializer}
    graph_inputs = [i.name for i in proto.graph.input if i.name not in initializers]
    if len(graph_inputs) != len(columns):
        raise PackageError(f"the ONNX model has {len(graph_inputs)} inputs for {len(columns)} features")
    return {feature: name for feature, name in zip(columns, graph_inputs, strict=True) if feature != name}


def _canonical(model: bytes | Path, name: str) -> bytes | Path:
    """The same bytes for the same model: the graph named after the package (some converters name
    it at random). A model that lives in a file with external data is used as it is."""
    if isinstance(model, Path):
        return model
    import onnx

    proto = onnx.load_model_from_string(model)
    proto.graph.name = name
    return bytes(proto.SerializeToString(deterministic=True))


def _check_shape(got: np.ndarray, task: Task, labels: list[str] | None, n: int) -> None:
    if task is Task.REGRESSION:
        if got.size != n:
            raise PackageError(f"expected one value per record from a regression model, got shape {got.shape}")
    elif got.shape != (n, len(labels or ())):
        raise PackageError(f"expected probabilities of shape ({n}, {len(labels or ())}), got {got.shape}")


def _write(
    output_dir: Path,
    onnx_model: bytes | Path,
    data_files: list[Path],
    manifest: ModelManifest,
    overwrite: bool,
    *,
    baseline: str | None = None,
) -> tuple[Path, Path]:
    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise PackageError(f"{output_dir} already exists (use overwrite to replace it)")
    parent = output_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=parent))
    except OSError as exc:
        raise PackageError(f"cannot write to {parent}: {exc.strerror or exc}") from None
    try:
        if isinstance(onnx_model, Path):
            shutil.copyfile(onnx_model, staging / MODEL_FILE)  # streamed: a model may be larger than memory
        else:
            (staging / MODEL_FILE).write_bytes(onnx_model)
        for data in data_files:
            shutil.copyfile(data, staging / data.name)
        (staging / MANIFEST_FILE).write_text(manifest.dumps())
        extra = [d.name for d in data_files]
        if baseline is not None:
            (staging / BASELINE_FILE).write_text(baseline)
            extra.append(BASELINE_FILE)
        write_archive(staging, extra=extra)
        os.chmod(staging, 0o755)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(staging, output_dir)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise PackageError(f"cannot write the package to {output_dir}: {exc.strerror or exc}") from None
    return output_dir, output_dir / "model.tar.gz"
