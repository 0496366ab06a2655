"""Conversion of trained models to ONNX, one function per framework.

Every converter returns the ONNX model, the name of the output that holds class probabilities
(classification, shape [N, classes]) or values (regression), the source model's own prediction
function over the same inputs (for the parity check), and the model's own classes where it has
them (`classes_`, in the order of its probabilities). Most models take one float32 matrix; a
scikit-learn Pipeline that starts with a ColumnTransformer takes its raw columns (one ONNX input per
feature, text as strings), and so does an ONNX file with one input per feature (`Shape`).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sagegate.manifest import Feature, Framework, InputType, OneHot, Task
from sagegate.packaging.exceptions import PackageError

__all__ = ["Converted", "Shape", "check_columns", "convert", "load_model_file", "shape_of"]

TARGET_OPSET = 17
BOOSTER_OPSET = 15  # the highest onnxmltools' XGBoost and LightGBM converters support
INPUT_NAME = "input"
Inputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class Shape:
    """What the model takes: one float32 matrix named `input`, or one input per feature (`columns`)."""

    width: int
    input_name: str = INPUT_NAME
    columns: dict[str, InputType] | None = None


@dataclass(frozen=True)
class Converted:
    onnx: bytes | Path  # the model, or (with external data beside it) the path of its .onnx file
    output: str
    source_predict: Callable[[Inputs], np.ndarray] | None  # None: the source is ONNX itself
    classes: list[Any] | None  # the model's own classes, in the order of its probabilities
    class_count: int | None  # how many classes it predicts, where it says
    data_files: list[Path] = field(default_factory=list)  # external data of a .onnx file


def convert(model: Any, framework: Framework, task: Task, shape: Shape, *, torch_output: str = "logits") -> Converted:
    if framework is Framework.PYTORCH:
        return _from_torch(model, task, shape, torch_output)
    converters: dict[Framework, Callable[[Any, Task, Shape], Converted]] = {
        Framework.SKLEARN: _from_sklearn,
        Framework.XGBOOST: _from_xgboost,
        Framework.LIGHTGBM: _from_lightgbm,
        Framework.CATBOOST: _from_catboost,
        Framework.TENSORFLOW: _from_tensorflow,
        Framework.ONNX: _from_onnx,
    }
    return converters[framework](model, task, shape)


# -- what the model takes ----------------------------------------------------------------------------


def _column_transformer(model: Any) -> bool:
    from sklearn.compose import ColumnTransformer

    first = model.steps[0][1] if hasattr(model, "steps") else model
    return isinstance(first, ColumnTransformer)


def shape_of(model: Any, framework: Framework, features: Sequence[Feature], width: int) -> Shape:
    """A scikit-learn Pipeline that starts with a ColumnTransformer takes the raw features; an ONNX
    file whose inputs are named as the features takes them so; every other model one matrix."""
    types: dict[str, InputType] = {f.name: "float32" if f.type.is_numeric else "string" for f in features}
    if framework is Framework.SKLEARN and _column_transformer(model):
        fitted = [str(c) for c in getattr(model, "feature_names_in_", [])]
        if fitted and set(fitted) != set(types):
            raise PackageError(f"the pipeline was fit on the columns {fitted}; the spec declares {list(types)}")
        shaped = [f.name for f in features if f.transforms]
        if shaped:
            raise PackageError(
                f"the pipeline does its own preprocessing (a ColumnTransformer): {shaped[0]!r} declares transforms"
            )
        _check_strict_encoders(model, features)
        return Shape(width, columns=types)
    if framework is Framework.ONNX:
        inputs = _onnx_inputs(model)
        if len(inputs) == 1:
            return Shape(width, input_name=next(iter(inputs)))
        if set(inputs) != set(types):
            raise PackageError(f"the ONNX model's inputs are {sorted(inputs)}; the spec's features are {list(types)}")
        return Shape(width, columns={name: inputs[name] for name in types})
    return Shape(width)


def matrix_columns(features: Sequence[Feature]) -> list[str]:
    """The names of the matrix's columns, as a data frame would name them: a feature's own name, or
    `<name>_<category>` for each column of its one-hot encoding (pandas.get_dummies' names)."""
    columns: list[str] = []
    for f in features:
        if f.width == 1 and not isinstance(f.encoding, OneHot):
            columns.append(f.name)
        else:
            columns.extend(f"{f.name}_{category}" for category in f.encoded_categories)
    return columns


def fitted_columns(model: Any, framework: Framework) -> list[str] | None:
    """The column names the model was fit on, where it kept them (a fit on a data frame)."""
    names: Any = None
    if framework is Framework.SKLEARN:
        final = model.steps[-1][1] if hasattr(model, "steps") else model
        names = getattr(model, "feature_names_in_", None)
        names = names if names is not None else getattr(final, "feature_names_in_", None)
    elif framework is Framework.XGBOOST:
        with contextlib.suppress(Exception):
            names = model.get_booster().feature_names
    elif framework is Framework.LIGHTGBM:
        with contextlib.suppress(Exception):
            names = model.feature_name() if callable(getattr(model, "feature_name", None)) else model.feature_name_
    elif framework is Framework.CATBOOST:
        names = getattr(model, "feature_names_", None)
    return None if names is None else [str(n) for n in names]


def check_columns(model: Any, framework: Framework, features: Sequence[Feature], shape: Shape) -> None:
    """Refuses a spec whose features are not in the order of the columns the model was fit on: the
    model would read each value as another feature's and answer confidently wrong. Only names that
    are the spec's own columns are compared (a model fit on a bare matrix has f0, Column_0, 0...)."""
    if shape.columns:
        return  # inputs named per feature: no order to get wrong
    fitted = fitted_columns(model, framework)
    if not fitted:
        return
    ours = matrix_columns(features)
    if len(fitted) != len(ours):
        if set(fitted) & set(ours):
            raise PackageError(
                f"the model was fit on {len(fitted)} columns {_listed(fitted)}; the spec's features make "
                f"{len(ours)}: {_listed(ours)}"
            )
        return
    known = set(ours)
    for at, (theirs, mine) in enumerate(zip(fitted, ours, strict=True)):
        if theirs in known and theirs != mine:
            raise PackageError(
                f"column {at} of the model's input is {theirs!r} where the spec's features put {mine!r}: "
                f"the model was fit on {_listed(fitted)}; list the spec's features in that order"
            )
    _check_category_order(model, framework, features)


def _check_category_order(model: Any, framework: Framework, features: Sequence[Feature]) -> None:
    """LightGBM fit on pandas categoricals codes each category by its position in the dtype's
    categories: an ordinal encoding in another order would feed it other categories."""
    if framework is not Framework.LIGHTGBM:
        return
    booster = model if callable(getattr(model, "feature_name", None)) else getattr(model, "booster_", None)
    categoricals = getattr(booster, "pandas_categorical", None) or []
    ordinal = [f for f in features if f.encoding is not None and not isinstance(f.encoding, OneHot)]
    if len(categoricals) != len(ordinal):
        return
    for feature, categories in zip(ordinal, categoricals, strict=True):
        theirs = [str(c) for c in categories]
        if theirs != feature.encoded_categories:
            raise PackageError(
                f"feature {feature.name!r}: the model was fit on the categories {theirs} in that order (pandas "
                f"categorical codes); the spec's ordinal step gives {feature.encoded_categories}: give them in "
                "the model's order"
            )


def _listed(names: Sequence[str], most: int = 8) -> str:
    shown = ", ".join(names[:most])
    return f"[{shown}{', ...' if len(names) > most else ''}]"


def _strict_encoders(model: Any) -> Iterator[tuple[str, list[str]]]:
    """(column, the categories it was fit on) for each column of the pipeline's ColumnTransformer
    that a OneHotEncoder or OrdinalEncoder encodes with handle_unknown='error'."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    prepare = model.steps[0][1]
    names = [str(c) for c in getattr(prepare, "feature_names_in_", [])]
    for _, transformer, columns in getattr(prepare, "transformers_", []):
        steps = [s for _, s in transformer.steps] if isinstance(transformer, Pipeline) else [transformer]
        for step in steps:
            if isinstance(step, OneHotEncoder | OrdinalEncoder) and step.handle_unknown == "error":
                listed = [columns] if isinstance(columns, str | int) else list(columns)
                for column, categories in zip(listed, step.categories_, strict=False):
                    name = names[column] if isinstance(column, int | np.integer) and names else str(column)
                    yield name, [str(c) for c in categories]


def _check_strict_encoders(model: Any, features: Sequence[Feature]) -> None:
    """An encoder that refuses unseen categories fails inside ONNX Runtime on one: every such
    request would be a 500. The spec must then declare the feature categorical, within the
    categories the encoder knows, so validation refuses the others with a 422 naming them."""
    declared = {f.name: f for f in features}
    for name, known in _strict_encoders(model):
        feature = declared.get(name)
        if feature is None:
            continue
        if feature.categories is None:
            raise PackageError(
                f"feature {name!r}: the pipeline's encoder refuses categories it was not fit on "
                f"(handle_unknown='error'): declare it categorical with categories from {_listed(known)}, "
                "or fit the encoder with handle_unknown='ignore'"
            )
        unknown = [c for c in feature.categories if c not in known]
        if unknown:
            raise PackageError(
                f"feature {name!r}: categories {unknown} were not seen by the pipeline's encoder "
                f"(handle_unknown='error'), which knows {_listed(known)}"
            )


def _source_matrix(inputs: Inputs, shape: Shape) -> np.ndarray:
    return inputs[shape.input_name]


def _frame(inputs: Inputs) -> Any:
    import pandas as pd

    return pd.DataFrame({name: values.reshape(-1) for name, values in inputs.items()})


def _predict_fn(model: Any, task: Task, shape: Shape) -> Callable[[Inputs], np.ndarray]:
    """The source's answers over the same inputs the ONNX model gets (a DataFrame for a pipeline)."""
    prepare: Callable[[Inputs], Any] = _frame if shape.columns else (lambda inputs: _source_matrix(inputs, shape))
    if task is Task.REGRESSION:
        return lambda inputs: np.asarray(model.predict(prepare(inputs)), dtype=np.float64).reshape(-1)
    if not hasattr(model, "predict_proba"):
        raise PackageError(f"{type(model).__name__} has no predict_proba: it cannot serve a {task} task")
    return lambda inputs: np.asarray(model.predict_proba(prepare(inputs)), dtype=np.float64)


def _classes(model: Any) -> list[Any] | None:
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    classes = getattr(final, "classes_", None)
    return None if classes is None else [c.item() if hasattr(c, "item") else c for c in classes]


# -- scikit-learn and the boosters ----------------------------------------------------------------------


def _from_sklearn(model: Any, task: Task, shape: Shape) -> Converted:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    predict = _predict_fn(model, task, shape)
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    options = {id(final): {"zipmap": False}} if task is not Task.REGRESSION else None
    if shape.columns:
        initial = [
            (name, StringTensorType([None, 1]) if kind == "string" else FloatTensorType([None, 1]))
            for name, kind in shape.columns.items()
        ]
    else:
        initial = [(INPUT_NAME, FloatTensorType([None, shape.width]))]
    try:
        onx = to_onnx(model, initial_types=initial, options=options, target_opset=TARGET_OPSET)
    except Exception as exc:  # skl2onnx raises many types; the message is what matters
        raise PackageError(f"scikit-learn model could not be converted to ONNX: {_first_line(exc)}") from exc
    output = "variable" if task is Task.REGRESSION else "probabilities"
    classes = _classes(model)
    return Converted(onx.SerializeToString(), output, predict, classes, len(classes) if classes else None)


def _from_xgboost(model: Any, task: Task, shape: Shape) -> Converted:
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    predict = _predict_fn(model, task, shape)
    # onnxmltools only understands the default feature names f0..fN.
    model.get_booster().feature_names = None
    try:
        onx = convert_xgboost(
            model, initial_types=[(INPUT_NAME, FloatTensorType([None, shape.width]))], target_opset=BOOSTER_OPSET
        )
    except Exception as exc:
        raise PackageError(f"XGBoost model could not be converted to ONNX: {_first_line(exc)}") from exc
    output = "variable" if task is Task.REGRESSION else "probabilities"
    classes = _classes(model)
    return Converted(onx.SerializeToString(), output, predict, classes, len(classes) if classes else None)


def _booster_predict(booster: Any, task: Task, shape: Shape) -> Callable[[Inputs], np.ndarray]:
    """A LightGBM Booster's answers (a model saved as text) as the scikit-learn face gives them."""

    def predict(inputs: Inputs) -> np.ndarray:
        out = np.asarray(booster.predict(_source_matrix(inputs, shape)), dtype=np.float64)
        if task is Task.REGRESSION:
            return out.reshape(-1)
        return np.column_stack([1.0 - out, out]) if out.ndim == 1 else out

    return predict


def _from_lightgbm(model: Any, task: Task, shape: Shape) -> Converted:
    """An LGBMClassifier/LGBMRegressor, or a Booster (a model file)."""
    import lightgbm
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    booster = isinstance(model, lightgbm.Booster)
    predict = _booster_predict(model, task, shape) if booster else _predict_fn(model, task, shape)
    try:
        onx = convert_lightgbm(
            model,
            initial_types=[(INPUT_NAME, FloatTensorType([None, shape.width]))],
            target_opset=BOOSTER_OPSET,
            zipmap=False,
        )
    except Exception as exc:
        raise PackageError(f"LightGBM model could not be converted to ONNX: {_first_line(exc)}") from exc
    output = "variable" if task is Task.REGRESSION else "probabilities"
    if booster and task is not Task.REGRESSION:
        classes: list[Any] | None = list(range(max(2, model.num_model_per_iteration())))
    else:
        classes = None if booster else _classes(model)
    return Converted(onx.SerializeToString(), output, predict, classes, len(classes) if classes else None)


def _from_catboost(model: Any, task: Task, shape: Shape) -> Converted:
    """CatBoost writes ONNX itself; its classifiers answer probabilities as a list of maps (ZipMap),
    which becomes the probability tensor it is made from."""
    import onnx

    predict = _predict_fn(model, task, shape)
    with tempfile.TemporaryDirectory(prefix="sagegate-catboost-") as scratch:
        path = Path(scratch) / "model.onnx"
        try:
            model.save_model(str(path), format="onnx")
        except Exception as exc:
            raise PackageError(f"CatBoost model could not be saved as ONNX: {_first_line(exc)}") from exc
        proto = onnx.load(str(path))
    proto.graph.input[0].name, old_input = INPUT_NAME, proto.graph.input[0].name
    for node in proto.graph.node:
        node.input[:] = [INPUT_NAME if name == old_input else name for name in node.input]
    if task is Task.REGRESSION:
        output = proto.graph.output[0].name
    else:
        output = "probabilities"
        zipmaps = [n for n in proto.graph.node if n.op_type == "ZipMap"]
        if zipmaps:
            (zipmap,) = zipmaps
            proto.graph.node.remove(zipmap)
            for out in list(proto.graph.output):
                if out.name == zipmap.output[0]:
                    proto.graph.output.remove(out)
            tensor = onnx.helper.make_tensor_value_info(zipmap.input[0], onnx.TensorProto.FLOAT, None)
            proto.graph.output.append(tensor)
            output = zipmap.input[0]
    classes = _classes(model)
    return Converted(proto.SerializeToString(), output, predict, classes, len(classes) if classes else None)


# -- neural networks ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' progress lines and warnings kept out of the user's terminal (errors still raise)."""
    loggers = [logging.getLogger(name) for name in ("torch", "torch.onnx", "torch.export", "tf2onnx", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _static_batch(program: Any) -> int | None:
    """The batch size a torch.export program was exported with, when it is fixed (not dynamic)."""
    import torch

    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in program.graph_signature.user_inputs:
            value = node.meta.get("val")
            if value is not None and value.dim() > 0 and isinstance(value.shape[0], int):
                return int(value.shape[0])
            if value is not None and value.dim() > 0 and isinstance(value.shape[0], torch.SymInt):
                return None
    return None


def _from_torch(model: Any, task: Task, shape: Shape, torch_output: str) -> Converted:
    import torch

    from sagegate.packaging.torch_head import TorchHead

    if torch_output not in ("logits", "probabilities"):
        raise PackageError(f"torch_output must be logits or probabilities, not {torch_output!r}")
    body: torch.nn.Module
    if isinstance(model, torch.export.ExportedProgram):
        fixed = _static_batch(model)
        if fixed is not None:
            raise PackageError(
                f"the .pt2 program was exported with a fixed batch of {fixed}: export it with a dynamic batch "
                "dimension, torch.export.export(module, (x,), dynamic_shapes=({0: torch.export.Dim('batch')},))"
            )
        body = model.module()  # already traced in inference mode; it refuses .train()/.eval()
    elif isinstance(model, torch.nn.Module):
        body = model.eval()
    else:
        raise PackageError(f"expected a torch.nn.Module or ExportedProgram, got {type(model).__name__}")
    head = TorchHead(body, task, torch_output)
    head.training = False  # the head only; an exported body refuses a recursive .eval()
    example = torch.zeros((2, shape.width), dtype=torch.float32)
    try:
        with torch.no_grad(), _quiet():
            program = torch.onnx.export(
                head,
                (example,),
                input_names=[INPUT_NAME],
                output_names=["output"],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                dynamo=True,
                verbose=False,
            )
        assert program is not None
        onnx_bytes = program.model_proto.SerializeToString()
    except Exception as exc:
        raise PackageError(f"PyTorch model could not be exported to ONNX: {_first_line(exc)}") from exc

    def predict(inputs: Inputs) -> np.ndarray:
        x = _source_matrix(inputs, shape)
        with torch.no_grad():
            out = head(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        return np.asarray(out.numpy(), dtype=np.float64)

    with torch.no_grad():
        width_out = head(example).shape[-1] if task is not Task.REGRESSION else None
    return Converted(onnx_bytes, "output", predict, None, width_out)


def _tf_to_onnx(function: Any) -> Any:
    """The function's graph with every captured value made a constant first: tf2onnx freezes
    variables, but a layer's captured tensors (Keras 3's Normalization mean and variance) would be
    left as extra graph inputs that no request feeds."""
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(function.get_concrete_function())
    (given,) = [t.name for t in frozen.inputs]
    (answer,) = [t.name for t in frozen.outputs]
    proto, _ = tf2onnx.convert.from_graph_def(
        frozen.graph.as_graph_def(), input_names=[given], output_names=[answer], opset=TARGET_OPSET
    )
    names = {given: INPUT_NAME, answer: "output"}
    for value in [*proto.graph.input, *proto.graph.output]:
        value.name = names.get(value.name, value.name)
    for node in proto.graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
    return proto


def _from_tensorflow(model: Any, task: Task, shape: Shape) -> Converted:
    """A Keras model (its outputs probabilities for classification: softmax or sigmoid, or values),
    exported through tf2onnx; a single sigmoid output becomes [1-p, p]."""
    try:
        import tensorflow as tf
        import tf2onnx  # noqa: F401  (here: a missing extra is named before any work)
    except ImportError:
        raise PackageError("TensorFlow models need the tensorflow extra: pip install 'sagegate[tensorflow]'") from None

    spec = (tf.TensorSpec((None, shape.width), tf.float32, name=INPUT_NAME),)

    def head(x: Any) -> Any:
        y = model(x, training=False)
        if task is Task.REGRESSION:
            return tf.reshape(y, [-1])
        if len(y.shape) == 1:
            y = tf.expand_dims(y, -1)
        return tf.concat([1.0 - y, y], axis=-1) if y.shape[-1] == 1 else y

    function = tf.function(lambda x: {"output": head(x)}, input_signature=spec)
    try:
        with _quiet():
            proto = _tf_to_onnx(function)
    except Exception as exc:
        raise PackageError(f"TensorFlow model could not be converted to ONNX: {_first_line(exc)}") from exc

    def predict(inputs: Inputs) -> np.ndarray:
        x = _source_matrix(inputs, shape).astype(np.float32)
        return np.asarray(head(tf.constant(x)).numpy(), dtype=np.float64)

    width_out = None if task is Task.REGRESSION else int(predict({INPUT_NAME: np.zeros((1, shape.width))}).shape[-1])
    return Converted(proto.SerializeToString(), "output", predict, None, width_out)


# -- ONNX files -------------------------------------------------------------------------------------------


_ONNX_TYPES: dict[int, InputType] = {1: "float32", 11: "float64", 7: "int64", 8: "string"}


def _onnx_inputs(model: Any) -> dict[str, InputType]:
    import onnx

    proto = onnx.load(str(model), load_external_data=False) if isinstance(model, str | Path) else _proto(model)
    initializers = {i.name for i in proto.graph.initializer}
    found: dict[str, InputType] = {}
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        kind = value.type.tensor_type.elem_type
        found[value.name] = _ONNX_TYPES.get(kind, "float32")
    return found


def _proto(model: Any) -> Any:
    import onnx

    data = model if isinstance(model, bytes) else model.SerializeToString()
    return onnx.load_model_from_string(data)


def _external_files(path: Path, proto: Any) -> list[Path]:
    """The files of a model's tensors that live outside the .onnx file (models over 2 GB)."""
    files = set()
    for tensor in proto.graph.initializer:
        if tensor.data_location == 1:  # EXTERNAL
            entry = {e.key: e.value for e in tensor.external_data}
            location = Path(entry["location"])
            if len(location.parts) != 1 or location.name in ("..", "."):
                raise PackageError(f"external data {location} must be a file beside the .onnx file")
            files.add(path.parent / location)
    return sorted(files)


def _from_onnx(model: Any, task: Task, shape: Shape) -> Converted:
    """An ONNX model as it is: from a path it is checked and used in place (never read whole), with
    the external data files beside it."""
    import onnx

    if isinstance(model, str | Path):
        path = Path(model)
        try:
            onnx.checker.check_model(str(path))  # the path form handles models over 2 GB
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:
            raise PackageError(f"not a valid ONNX model: {_first_line(exc)}") from exc
        data: bytes | Path = path
        files = _external_files(path, proto)
        if not files:
            data = path.read_bytes()
    else:
        try:
            proto = _proto(model)
            onnx.checker.check_model(proto)
        except Exception as exc:
            raise PackageError(f"not a valid ONNX model: {_first_line(exc)}") from exc
        data, files = proto.SerializeToString(), []
    outputs = [o.name for o in proto.graph.output]
    preferred = "variable" if task is Task.REGRESSION else "probabilities"
    output = preferred if preferred in outputs else outputs[-1]
    return Converted(data, output, None, None, None, files)


def load_model_file(path: Path, framework: Framework, task: Task) -> Any:
    """Loads a trained model from a file for the CLI. Only the user's own artifacts are loaded here;
    the server never unpickles anything."""
    if not path.exists():
        raise PackageError(f"model file not found: {path}")
    if framework is Framework.ONNX:
        return path
    if framework is Framework.SKLEARN:
        import joblib

        return joblib.load(path)
    if framework is Framework.XGBOOST:
        import xgboost

        model = xgboost.XGBRegressor() if task is Task.REGRESSION else xgboost.XGBClassifier()
        model.load_model(path)
        return model
    if framework is Framework.LIGHTGBM:
        if path.suffix == ".joblib":  # an LGBMClassifier / LGBMRegressor saved with joblib
            _extra("lightgbm", "lightgbm")
            import joblib

            return joblib.load(path)
        return _extra("lightgbm", "lightgbm").Booster(model_file=str(path))
    if framework is Framework.CATBOOST:
        catboost = _extra("catboost", "catboost")
        model = catboost.CatBoostRegressor() if task is Task.REGRESSION else catboost.CatBoostClassifier()
        model.load_model(str(path))
        return model
    if framework is Framework.TENSORFLOW:
        return _extra("keras", "tensorflow").models.load_model(path)
    import torch

    if path.suffix != ".pt2":
        raise PackageError("a PyTorch model is packaged from a torch.export program saved as .pt2")
    return torch.export.load(path)


def _extra(module: str, extra: str) -> Any:
    """`module`, or a one-line PackageError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise PackageError(f"{extra} models need the {extra} extra: pip install 'sagegate[{extra}]'") from None


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text[:300]
