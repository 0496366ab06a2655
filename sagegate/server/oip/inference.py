"""The Open Inference Protocol v2 over the data plane, without a transport: REST and gRPC parse
their wire form into an `InferRequest` and answer what `infer` returns.

How a manifest's named features meet OIP inputs (both are accepted, on every model):

* **one input per feature**, named as the feature, shape [N] or [N, 1]: FP32/FP64 (or any integer
  type) for float features, INT64 for int ones, BOOL for booleans, BYTES (UTF-8) for categorical and
  string ones. A missing optional feature is filled as in a JSON record; the values are checked by
  the same rules, record by record. This is what the metadata lists for models with text features.
* **one 2-D tensor named `input`**, shape [N, features], the features in the manifest's order
  (booleans as 0/1), any numeric datatype: the tensor path. It is validated as one block with the
  checks of an x-npy body and runs as an array, with no Python object per record. This is what
  the metadata lists for models whose features are all numeric.

Outputs, each of N records: `prediction` (FP64: the value, or the positive class's probability;
BYTES: the label of a multiclass model), `label` (BYTES) and `confidence` (FP64) for classifiers,
`probabilities` (FP64 [N, classes]) for multiclass ones: the same answers as /invocations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sagegate import __version__
from sagegate.features import RecordError, Row
from sagegate.manifest import FeatureType, Task
from sagegate.server.dataplane import DataPlane, ServedModel
from sagegate.server.exceptions import BadRequest, ModelNotFound, PayloadTooLarge
from sagegate.server.model import LoadedModel, Prediction
from sagegate.server.oip.tensors import Tensor, coded_bytes

__all__ = [
    "BLOCK_INPUT",
    "InferRequest",
    "InferResponse",
    "RequestedOutput",
    "block",
    "feature_rows",
    "infer",
    "model_metadata",
    "resolve",
    "server_metadata",
]

BLOCK_INPUT = "input"
PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ["binary_tensor_data"]
_FEATURE_TYPES = {
    FeatureType.FLOAT: "FP32",
    FeatureType.INT: "INT64",
    FeatureType.BOOL: "BOOL",
    FeatureType.CATEGORICAL: "BYTES",
    FeatureType.STRING: "BYTES",
}


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None = None  # None: the request's default (binary_data_output)


@dataclass
class InferRequest:
    inputs: list[Tensor]
    outputs: list[RequestedOutput] = field(default_factory=list)
    id: str | None = None
    binary_output: bool = False


@dataclass
class InferResponse:
    model_name: str
    model_version: str
    id: str | None
    outputs: list[tuple[Tensor, bool]]  # each output and whether it goes as binary data


def server_metadata() -> dict[str, Any]:
    return {"name": "sagegate", "version": __version__, "extensions": EXTENSIONS}


def resolve(plane: DataPlane, name: str, version: str | None = None) -> ServedModel:
    """The loaded model of that name (and version, when one is named), else ModelNotFound (404)."""
    served = plane.get(name)
    if version and version != served.model.manifest.version:
        raise ModelNotFound(
            f"model {name!r} has no version {version!r} here (it serves {served.model.manifest.version!r})",
            model=name,
        )
    return served


def input_specs(model: LoadedModel) -> list[dict[str, Any]]:
    features = model.manifest.features
    if not model.pipeline.categorical_features:
        return [{"name": BLOCK_INPUT, "datatype": "FP32", "shape": [-1, len(features)]}]
    return [{"name": f.name, "datatype": _FEATURE_TYPES[f.type], "shape": [-1, 1]} for f in features]


def output_specs(model: LoadedModel) -> list[dict[str, Any]]:
    outputs = model.manifest.outputs
    if outputs.task is Task.REGRESSION:
        return [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]
    specs: list[dict[str, Any]] = [
        {"name": "prediction", "datatype": "FP64" if outputs.task is Task.BINARY else "BYTES", "shape": [-1]},
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "confidence", "datatype": "FP64", "shape": [-1]},
    ]
    if outputs.task is Task.MULTICLASS:
        specs.append({"name": "probabilities", "datatype": "FP64", "shape": [-1, len(outputs.labels or [])]})
    return specs


def model_metadata(served: ServedModel) -> dict[str, Any]:
    model = served.model
    return {
        "name": model.name,
        "versions": [model.manifest.version],
        "platform": PLATFORM,
        "inputs": input_specs(model),
        "outputs": output_specs(model),
    }


async def infer(plane: DataPlane, served: ServedModel, request: InferRequest, max_records: int) -> InferResponse:
    model = served.model
    wanted = _wanted(model, request)
    if not request.inputs:
        raise BadRequest("the request has no inputs")
    pipeline = model.pipeline
    if len(request.inputs) == 1 and request.inputs[0].name not in pipeline.names:
        columns = _block_columns(model, await plane.predict_block(served, block(model, request.inputs[0], max_records)))
    else:
        rows = feature_rows(model, request.inputs, max_records)
        if served.blocks is not None:  # a numeric model: its rows run as one block too
            numbers = np.array([r[0] for r in rows], dtype=np.float64).reshape(len(rows), -1)
            columns = _block_columns(model, await plane.predict_block(served, numbers))
        else:
            columns = _prediction_columns(model, await plane.predict(served, rows))
    types = {s["name"]: s["datatype"] for s in output_specs(model)}
    outputs = []
    for name, binary in wanted:
        data = columns[name]
        tensor = data if isinstance(data, Tensor) else Tensor(name, types[name], data.shape, data)
        outputs.append((tensor, binary))
    return InferResponse(model.name, model.manifest.version, request.id, outputs)


def _wanted(model: LoadedModel, request: InferRequest) -> list[tuple[str, bool]]:
    known = [s["name"] for s in output_specs(model)]
    if not request.outputs:
        return [(name, request.binary_output) for name in known]
    wanted = []
    for output in request.outputs:
        if output.name not in known:
            raise BadRequest(f"model {model.name!r} has no output {output.name!r} (its outputs: {', '.join(known)})")
        wanted.append((output.name, request.binary_output if output.binary is None else output.binary))
    return wanted


def _count(n: int, max_records: int) -> None:
    if n == 0:
        raise BadRequest("no records in the request (a tensor of 0 rows)")
    if n > max_records:
        raise PayloadTooLarge(f"{n} records in one request; the limit is {max_records}")


def block(model: LoadedModel, tensor: Tensor, max_records: int) -> np.ndarray:
    """The tensor path: one 2-D tensor, validated as one block (the x-npy checks)."""
    pipeline = model.pipeline
    width = len(pipeline.names)
    if tensor.name != BLOCK_INPUT:
        raise BadRequest(
            f"model {model.name!r} has no input {tensor.name!r}: send one input per feature, or one "
            f"tensor {BLOCK_INPUT!r} of shape [N, {width}]"
        )
    if pipeline.categorical_features:
        raise BadRequest(
            f"model {model.name!r} takes text features "
            f"({', '.join(f.name for f in pipeline.categorical_features)}): send one input per feature"
        )
    if not tensor.numeric:
        raise BadRequest(f"input {BLOCK_INPUT!r} must be numeric, got {tensor.datatype}")
    if len(tensor.shape) != 2 or tensor.shape[1] != width:
        raise BadRequest(f"input {BLOCK_INPUT!r} must have shape [N, {width}], got {list(tensor.shape)}")
    _count(tensor.shape[0], max_records)
    try:
        return pipeline.block_from_array(tensor.data)
    except RecordError as exc:
        raise BadRequest(str(exc), record=exc.record, field=exc.field) from None


def feature_rows(model: LoadedModel, inputs: list[Tensor], max_records: int) -> list[Row]:
    """One input per feature: the records they hold, validated as JSON records are."""
    try:
        return model.pipeline.rows_from_records(_records(model, inputs, max_records))
    except RecordError as exc:
        raise BadRequest(str(exc), record=exc.record, field=exc.field) from None


def _records(model: LoadedModel, inputs: list[Tensor], max_records: int) -> list[dict[str, Any]]:
    names = model.pipeline.names
    n: int | None = None
    columns: dict[str, list[Any]] = {}
    for tensor in inputs:
        if tensor.name not in names:
            raise BadRequest(f"input {tensor.name!r} is not a feature of model {model.name!r}", field=tensor.name)
        if tensor.name in columns:
            raise BadRequest(f"input {tensor.name!r} is given twice", field=tensor.name)
        shape = tensor.shape
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise BadRequest(f"input {tensor.name!r} must have shape [N] or [N, 1], got {list(shape)}")
        if n is not None and shape[0] != n:
            raise BadRequest(f"input {tensor.name!r} has {shape[0]} records, the others {n}", field=tensor.name)
        n = shape[0]
        values = tensor.data.reshape(-1).tolist()
        if tensor.datatype == "BYTES":
            values = [_text(tensor.name, v) for v in values]
        columns[tensor.name] = values
    assert n is not None
    _count(n, max_records)
    given = list(columns)
    return [dict(zip(given, record, strict=True)) for record in zip(*columns.values(), strict=True)]


def _text(name: str, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"input {name!r}: an element is not UTF-8 text (byte {exc.start})", field=name) from None


def _texts(values: Any) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = [str(v).encode() for v in values]
    return out


def _block_columns(model: LoadedModel, out: np.ndarray) -> dict[str, Tensor | np.ndarray]:
    columns = model.postprocess_columns(out)
    task = model.manifest.outputs.task
    if task is Task.REGRESSION:
        return {"prediction": np.asarray(columns["prediction"], dtype=np.float64)}
    codes, names = columns["label"]
    label = coded_bytes("label", codes, names)
    prediction: Tensor | np.ndarray
    if task is Task.MULTICLASS:
        prediction = Tensor("prediction", "BYTES", label.shape, label.data, label.raw)
    else:
        prediction = np.asarray(columns["prediction"], dtype=np.float64)
    found: dict[str, Tensor | np.ndarray] = {
        "prediction": prediction,
        "label": label,
        "confidence": np.asarray(columns["confidence"], dtype=np.float64),
    }
    if task is Task.MULTICLASS:
        found["probabilities"] = out.astype(np.float64)
    return found


def _prediction_columns(model: LoadedModel, predictions: list[Prediction]) -> dict[str, Tensor | np.ndarray]:
    task = model.manifest.outputs.task
    if task is Task.REGRESSION:
        return {"prediction": np.array([p["prediction"] for p in predictions], dtype=np.float64)}
    labels = _texts([p["label"] for p in predictions])
    found: dict[str, Tensor | np.ndarray] = {
        "prediction": labels if task is Task.MULTICLASS else np.array([p["prediction"] for p in predictions]),
        "label": labels,
        "confidence": np.array([p["confidence"] for p in predictions], dtype=np.float64),
    }
    if task is Task.MULTICLASS:
        order = model.manifest.outputs.labels or []
        found["probabilities"] = np.array([[p["probabilities"][k] for k in order] for p in predictions])
    return found
