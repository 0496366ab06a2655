"""Tiny hand-built ONNX models that pin the server's machinery (slow loads, run-time failures)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sagegate.local.examples import synthetic_features
from sagegate.packaging import BuiltPackage, build_package

__all__ = ["heavy_package", "log_package", "reshape_failing_package"]


def _graph_package(graph: onnx.GraphProto, output_dir: Path, name: str, n_features: int) -> BuiltPackage:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sample = [{f"f{i}": 0.1 * i for i in range(n_features)}]
    return build_package(
        model.SerializeToString(),
        framework="onnx",
        name=name,
        version="1",
        features=synthetic_features(n_features),
        task="regression",
        sample=sample,
        output_dir=output_dir,
        overwrite=True,
    )


def heavy_package(
    output_dir: Path, *, hidden: int = 2048, layers: int = 4, n_features: int = 30, name: str = "heavy"
) -> BuiltPackage:
    """A regression MLP with `layers` hidden layers of `hidden` units: slow to load and to run."""
    rng = np.random.default_rng(0)
    widths = [n_features, *([hidden] * layers), 1]
    nodes, inits, current = [], [], "input"
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        weight = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [current, f"w{i}"], [f"m{i}"]))
        current = f"m{i}"
        if i < len(widths) - 2:
            nodes.append(helper.make_node("Relu", [current], [f"r{i}"]))
            current = f"r{i}"
    nodes.append(helper.make_node("Identity", [current], ["variable"]))
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", n_features])],
        [helper.make_tensor_value_info("variable", TensorProto.FLOAT, ["N", 1])],
        initializer=inits,
    )
    return _graph_package(graph, output_dir, name, n_features)


def _unchecked_package(graph: onnx.GraphProto, output_dir: Path, name: str, n_features: int) -> BuiltPackage:
    """A package written by hand, without build_package's checks (which would refuse a broken model)."""
    import hashlib
    import shutil

    from sagegate.manifest import ModelManifest
    from sagegate.packaging import sha256_file, write_archive

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data = model.SerializeToString()
    manifest = ModelManifest(
        name=name,
        version="1",
        framework="onnx",
        features=synthetic_features(n_features),
        outputs={"task": "regression", "onnx_output": "variable"},
        sample=[{f"f{i}": 0.1 * i for i in range(n_features)}],
        sha256=hashlib.sha256(data).hexdigest(),
    )
    shutil.rmtree(output_dir, ignore_errors=True)
    output_dir.mkdir(parents=True)
    (output_dir / "model.onnx").write_bytes(data)
    (output_dir / "manifest.json").write_text(manifest.dumps())
    archive = write_archive(output_dir)
    return BuiltPackage(output_dir, manifest, archive, sha256_file(archive), 0.0)


def reshape_failing_package(output_dir: Path, *, n_features: int = 4, name: str = "brittle") -> BuiltPackage:
    """Sums its features, but its graph reshapes to a batch of one: any batch of 2+ records fails in ORT.
    (Packaging refuses it, as it checks many records at once: it is written by hand.)"""
    shape = numpy_helper.from_array(np.array([1, n_features], dtype=np.int64), "shape")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    nodes = [
        helper.make_node("Reshape", ["input", "shape"], ["one"]),
        helper.make_node("ReduceSum", ["one", "axes"], ["variable"], keepdims=1),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", n_features])],
        [helper.make_tensor_value_info("variable", TensorProto.FLOAT, ["N", 1])],
        initializer=[shape, axes],
    )
    return _unchecked_package(graph, output_dir, name, n_features)


def log_package(output_dir: Path, *, name: str = "logarithm") -> BuiltPackage:
    """log(f0) per record: a finite input below zero makes the model answer NaN."""
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    nodes = [
        helper.make_node("ReduceSum", ["input", "axes"], ["sum"], keepdims=1),
        helper.make_node("Log", ["sum"], ["variable"]),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("variable", TensorProto.FLOAT, ["N", 1])],
        initializer=[axes],
    )
    return _graph_package(graph, output_dir, name, 1)
