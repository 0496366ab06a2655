"""Conversion of trained models to ONNX, one function per framework.

Every converter returns the ONNX bytes, the name of the output that holds class probabilities
(classification, shape [N, classes]) or values (regression), and the source model's own
prediction function over the same float32 input matrix, for the parity check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sagegate.manifest import Framework, Task
from sagegate.packaging.exceptions import PackageError

__all__ = ["Converted", "convert", "load_model_file"]

TARGET_OPSET = 17
XGBOOST_OPSET = 15  # the highest onnxmltools' XGBoost converter supports
INPUT_NAME = "input"


@dataclass(frozen=True)
class Converted:
    onnx: bytes
    output: str
    source_predict: Callable[[np.ndarray], np.ndarray] | None  # None: the source is ONNX itself
    classes: int | None  # number of classes the model predicts, when it says


def convert(model: Any, framework: Framework, task: Task, width: int, *, torch_output: str = "logits") -> Converted:
    if framework is Framework.SKLEARN:
        return _from_sklearn(model, task, width)
    if framework is Framework.XGBOOST:
        return _from_xgboost(model, task, width)
    if framework is Framework.PYTORCH:
        return _from_torch(model, task, width, torch_output)
    return _from_onnx(model, task)


def _predict_fn(model: Any, task: Task) -> Callable[[np.ndarray], np.ndarray]:
    if task is Task.REGRESSION:
        return lambda x: np.asarray(model.predict(x), dtype=np.float64).reshape(-1)
    if not hasattr(model, "predict_proba"):
        raise PackageError(f"{type(model).__name__} has no predict_proba: it cannot serve a {task} task")
    return lambda x: np.asarray(model.predict_proba(x), dtype=np.float64)


def _from_sklearn(model: Any, task: Task, width: int) -> Converted:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    predict = _predict_fn(model, task)
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    options = {id(final): {"zipmap": False}} if task is not Task.REGRESSION else None
    try:
        onx = to_onnx(
            model,
            initial_types=[(INPUT_NAME, FloatTensorType([None, width]))],
            options=options,
            target_opset=TARGET_OPSET,
        )
    except Exception as exc:  # skl2onnx raises many types; the message is what matters
        raise PackageError(f"scikit-learn model could not be converted to ONNX: {_first_line(exc)}") from exc
    output = "variable" if task is Task.REGRESSION else "probabilities"
    classes = len(final.classes_) if hasattr(final, "classes_") else None
    return Converted(onx.SerializeToString(), output, predict, classes)


def _from_xgboost(model: Any, task: Task, width: int) -> Converted:
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    predict = _predict_fn(model, task)
    # onnxmltools only understands the default feature names f0..fN.
    model.get_booster().feature_names = None
    try:
        onx = convert_xgboost(
            model, initial_types=[(INPUT_NAME, FloatTensorType([None, width]))], target_opset=XGBOOST_OPSET
        )
    except Exception as exc:
        raise PackageError(f"XGBoost model could not be converted to ONNX: {_first_line(exc)}") from exc
    output = "variable" if task is Task.REGRESSION else "probabilities"
    classes = len(model.classes_) if hasattr(model, "classes_") else None
    return Converted(onx.SerializeToString(), output, predict, classes)


def _from_torch(model: Any, task: Task, width: int, torch_output: str) -> Converted:
    import torch

    from sagegate.packaging.torch_head import TorchHead

    if torch_output not in ("logits", "probabilities"):
        raise PackageError(f"torch_output must be logits or probabilities, not {torch_output!r}")
    body: torch.nn.Module
    if isinstance(model, torch.export.ExportedProgram):
        body = model.module()  # already traced in inference mode; it refuses .train()/.eval()
    elif isinstance(model, torch.nn.Module):
        body = model.eval()
    else:
        raise PackageError(f"expected a torch.nn.Module or ExportedProgram, got {type(model).__name__}")
    head = TorchHead(body, task, torch_output)
    head.training = False  # the head only; an exported body refuses a recursive .eval()
    example = torch.zeros((2, width), dtype=torch.float32)
    try:
        with torch.no_grad():
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

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = head(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        return np.asarray(out.numpy(), dtype=np.float64)

    with torch.no_grad():
        width_out = head(example).shape[-1] if task is not Task.REGRESSION else None
    return Converted(onnx_bytes, "output", predict, width_out)


def _from_onnx(model: Any, task: Task) -> Converted:
    import onnx

    data = Path(model).read_bytes() if isinstance(model, (str, Path)) else model
    if not isinstance(data, bytes):
        data = model.SerializeToString()
    try:
        proto = onnx.load_model_from_string(data)
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise PackageError(f"not a valid ONNX model: {_first_line(exc)}") from exc
    outputs = [o.name for o in proto.graph.output]
    preferred = "variable" if task is Task.REGRESSION else "probabilities"
    output = preferred if preferred in outputs else outputs[-1]
    return Converted(data, output, None, None)


def load_model_file(path: Path, framework: Framework, task: Task) -> Any:
    """Loads a trained model from a file for the CLI. Only the user's own artifacts are loaded here;
    the server never unpickles anything."""
    if not path.is_file():
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
    import torch

    if path.suffix != ".pt2":
        raise PackageError("a PyTorch model is packaged from a torch.export program saved as .pt2")
    return torch.export.load(path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
