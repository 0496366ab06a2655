"""Open Inference Protocol v2 conformance, proven with clients sagegate did not write: tritonclient's
HTTP and gRPC clients (and its generated gRPC stubs for typed contents) against `sagegate serve`
running as a process, serving a real ONNX classifier with text features (fraud, scikit-learn) and a
numeric MLP. Every answer is checked against the same records sent to /invocations."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from sagegate.local.data import Transactions
from sagegate.local.examples import build_synthetic_package
from sagegate.local.process import ServerProcess, free_port
from sagegate.packaging import BuiltPackage
from tests.integration.helpers import expected_positive

pytestmark = pytest.mark.integration

N_FEATURES = 30


@pytest.fixture(scope="module")
def mlp(packages_dir: Path) -> BuiltPackage:
    return build_synthetic_package(packages_dir / "oip-mlp", "mlp", hidden=(16, 8), name="mlp")


@pytest.fixture(scope="module")
def tri(packages_dir: Path) -> BuiltPackage:
    """A three-class scikit-learn model on two features."""
    from sklearn.linear_model import LogisticRegression

    from sagegate.packaging import build_package

    x = np.random.default_rng(3).normal(size=(300, 2))
    return build_package(
        LogisticRegression().fit(x, np.digitize(x[:, 0], [-0.5, 0.5])),
        framework="sklearn",
        name="tri",
        version="1",
        features=[{"name": "a", "type": "float"}, {"name": "b", "type": "float"}],
        task="multiclass",
        labels=["low", "mid", "high"],
        sample=[{"a": 0.1, "b": 0.2}],
        output_dir=packages_dir / "oip-tri",
    )


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, fraud_logreg: BuiltPackage, mlp: BuiltPackage, tri: BuiltPackage
) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("oip")
    for package in (fraud_logreg, mlp, tri):
        shutil.copytree(package.path, home / "models" / package.manifest.name)
    grpc_port = free_port()
    process = ServerProcess(
        home / "models",
        free_port(),
        home / "server.log",
        extra_args=("--grpc-port", str(grpc_port), "--workers", "1"),
    )
    process.grpc_port = grpc_port  # type: ignore[attr-defined]
    try:
        process.wait_healthy(120)
        yield process
    finally:
        process.stop()


def _http(server: ServerProcess) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(f"127.0.0.1:{server.port}")


def _grpc(server: ServerProcess) -> triton_grpc.InferenceServerClient:
    return triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")  # type: ignore[attr-defined]


def _invocations(server: ServerProcess, model: str, records: list[Any]) -> list[dict[str, Any]]:
    answer = httpx.post(f"{server.url}/models/{model}/invoke", json={"instances": records}, timeout=30)
    assert answer.status_code == 200, answer.text
    predictions: list[dict[str, Any]] = answer.json()["predictions"]
    return predictions


def _matrix(rows: int, seed: int = 0) -> np.ndarray:
    return np.round(np.random.default_rng(seed).normal(size=(rows, N_FEATURES)), 3).astype(np.float32)


def _fraud_columns(records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    return {name: np.array([[r[name]] for r in records]) for name in records[0]}


_DATATYPES = {"f": "FP32", "i": "INT64", "b": "BOOL", "U": "BYTES"}


def _fraud_inputs(module: Any, records: list[dict[str, Any]], binary: bool = True) -> list[Any]:
    inputs = []
    for name, column in _fraud_columns(records).items():
        datatype = _DATATYPES[column.dtype.kind]
        data = column.astype(np.float32) if datatype == "FP32" else column
        data = data.astype(object) if datatype == "BYTES" else data
        tensor = module.InferInput(name, list(column.shape), datatype)
        if module is triton_http:
            tensor.set_data_from_numpy(data, binary_data=binary)
        else:
            tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    return inputs


# -- metadata and health ------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_server_and_model_metadata(server: ServerProcess, protocol: str) -> None:
    client = _http(server) if protocol == "http" else _grpc(server)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("fraud")
    assert client.is_model_ready("mlp", "1")
    assert not client.is_model_ready("nope")
    as_json = protocol == "grpc"
    meta = client.get_server_metadata(as_json=True) if as_json else client.get_server_metadata()
    assert meta["name"] == "sagegate"
    assert "binary_tensor_data" in meta["extensions"]

    model = client.get_model_metadata("mlp", as_json=True) if as_json else client.get_model_metadata("mlp")
    assert model["name"] == "mlp"
    assert model["versions"] == ["1"]
    assert [(i["name"], i["datatype"], [int(d) for d in i["shape"]]) for i in model["inputs"]] == [
        ("input", "FP32", [-1, N_FEATURES])
    ]
    assert [o["name"] for o in model["outputs"]] == ["prediction", "label", "confidence"]

    fraud = client.get_model_metadata("fraud", as_json=True) if as_json else client.get_model_metadata("fraud")
    types = {i["name"]: i["datatype"] for i in fraud["inputs"]}
    assert types["amount"] == "FP32"
    assert types["hour"] == "INT64"
    assert types["channel"] == "BYTES"
    assert types["is_foreign"] == "BOOL"


def test_unknown_model_or_version_is_404_over_http(server: ServerProcess) -> None:
    client = _http(server)
    for call in (lambda: client.get_model_metadata("nope"), lambda: client.get_model_metadata("mlp", "7")):
        with pytest.raises(InferenceServerException) as caught:
            call()
        assert caught.value.status() == "404"
    answer = httpx.get(f"{server.url}/v2/models/nope/ready")
    assert answer.status_code == 404
    assert "nope" in answer.json()["error"]


def test_unknown_model_is_not_found_over_grpc(server: ServerProcess) -> None:
    client = _grpc(server)
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("nope")
    assert caught.value.status() == "StatusCode.NOT_FOUND"
    x = triton_grpc.InferInput("input", [1, N_FEATURES], "FP32")
    x.set_data_from_numpy(_matrix(1))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("nope", [x])
    assert caught.value.status() == "StatusCode.NOT_FOUND"


# -- inference ----------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False])
def test_fp32_tensor_over_http_answers_as_invocations(server: ServerProcess, binary: bool) -> None:
    x = _matrix(40)
    tensor = triton_http.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    outputs = [triton_http.InferRequestedOutput(n, binary_data=binary) for n in ("prediction", "label", "confidence")]
    result = _http(server).infer("mlp", [tensor], outputs=outputs, request_id="r-1")
    expected = _invocations(server, "mlp", x.astype(np.float64).tolist())
    assert result.get_response()["id"] == "r-1"
    assert result.get_response()["model_version"] == "1"
    np.testing.assert_allclose(result.as_numpy("prediction"), [p["prediction"] for p in expected], rtol=1e-6)
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label").tolist()]
    assert labels == [p["label"] for p in expected]
    np.testing.assert_allclose(result.as_numpy("confidence"), [p["confidence"] for p in expected], rtol=1e-6)


def test_default_outputs_come_as_binary_data(server: ServerProcess) -> None:
    """No outputs named: tritonclient asks for every output in binary (binary_data_output)."""
    x = _matrix(3)
    tensor = triton_http.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = _http(server).infer("mlp", [tensor])
    assert {o["name"] for o in result.get_response()["outputs"]} == {"prediction", "label", "confidence"}
    assert all("binary_data_size" in o["parameters"] for o in result.get_response()["outputs"])
    assert result.as_numpy("prediction").shape == (3,)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_int64_tensor_is_the_same_numbers(server: ServerProcess, protocol: str) -> None:
    x = np.random.default_rng(2).integers(-3, 4, size=(10, N_FEATURES)).astype(np.int64)
    module: Any = triton_http if protocol == "http" else triton_grpc
    tensor = module.InferInput("input", list(x.shape), "INT64")
    tensor.set_data_from_numpy(x)
    client = _http(server) if protocol == "http" else _grpc(server)
    result = client.infer("mlp", [tensor])
    expected = _invocations(server, "mlp", x.tolist())
    np.testing.assert_allclose(result.as_numpy("prediction"), [p["prediction"] for p in expected], rtol=1e-6)


@pytest.mark.parametrize(("protocol", "binary"), [("http", True), ("http", False), ("grpc", True)])
def test_one_input_per_feature_with_bytes_int64_and_bool(
    server: ServerProcess, fraud_logreg: BuiltPackage, transactions: Transactions, protocol: str, binary: bool
) -> None:
    records = transactions.records[:25]
    module: Any = triton_http if protocol == "http" else triton_grpc
    client = _http(server) if protocol == "http" else _grpc(server)
    result = client.infer("fraud", _fraud_inputs(module, records, binary))
    np.testing.assert_allclose(result.as_numpy("prediction"), expected_positive(fraud_logreg, records), atol=1e-6)
    labels = [v.decode() for v in result.as_numpy("label").tolist()]
    assert labels == [p["label"] for p in _invocations(server, "fraud", records)]


def test_grpc_typed_contents(server: ServerProcess, fraud_logreg: BuiltPackage, transactions: Transactions) -> None:
    """Typed contents (fp32_contents, int64_contents, bytes_contents, bool_contents) instead of raw
    bytes, through tritonclient's generated stubs."""
    records = transactions.records[:5]
    request = service_pb2.ModelInferRequest(model_name="fraud")
    for name, column in _fraud_columns(records).items():
        tensor = request.inputs.add(name=name, datatype=_DATATYPES[column.dtype.kind], shape=list(column.shape))
        values = column.reshape(-1).tolist()
        field = {"FP32": "fp32_contents", "INT64": "int64_contents", "BOOL": "bool_contents"}.get(tensor.datatype)
        if field is None:
            tensor.contents.bytes_contents.extend(v.encode() for v in values)
        else:
            getattr(tensor.contents, field).extend(values)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:  # type: ignore[attr-defined]
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    names = [o.name for o in response.outputs]
    prediction = np.frombuffer(response.raw_output_contents[names.index("prediction")], dtype="<f8")
    np.testing.assert_allclose(prediction, expected_positive(fraud_logreg, records), atol=1e-6)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_multiclass_model_answers_labels_and_probabilities(server: ServerProcess, protocol: str) -> None:
    x = np.random.default_rng(4).normal(size=(12, 2))
    module: Any = triton_http if protocol == "http" else triton_grpc
    client = _http(server) if protocol == "http" else _grpc(server)
    meta = client.get_model_metadata("tri", as_json=True) if protocol == "grpc" else client.get_model_metadata("tri")
    assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {
        "prediction": "BYTES",
        "label": "BYTES",
        "confidence": "FP64",
        "probabilities": "FP64",
    }
    tensor = module.InferInput("input", list(x.shape), "FP64")
    tensor.set_data_from_numpy(x)
    result = client.infer("tri", [tensor])
    expected = _invocations(server, "tri", x.tolist())
    assert [v.decode() for v in result.as_numpy("prediction").tolist()] == [p["prediction"] for p in expected]
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (12, 3)
    np.testing.assert_allclose(
        probabilities, [[p["probabilities"][k] for k in ("low", "mid", "high")] for p in expected], rtol=1e-6
    )


# -- errors: 400 / INVALID_ARGUMENT, never a 500 ------------------------------------------------


def _bad_requests() -> list[tuple[str, list[int], str, Any]]:
    return [
        ("input", [2, N_FEATURES - 1], "FP32", _matrix(2)[:, :-1]),  # wrong width
        ("input", [N_FEATURES], "FP32", _matrix(1)[0]),  # not 2-D
        ("input", [1, N_FEATURES], "BYTES", np.array([[b"x"] * N_FEATURES], dtype=object)),  # not numeric
        ("colour", [1, N_FEATURES], "FP32", _matrix(1)),  # no such input
    ]


@pytest.mark.parametrize("index", range(4))
def test_bad_tensors_are_400_over_http(server: ServerProcess, index: int) -> None:
    name, shape, datatype, data = _bad_requests()[index]
    tensor = triton_http.InferInput(name, shape, datatype)
    tensor.set_data_from_numpy(data)
    with pytest.raises(InferenceServerException) as caught:
        _http(server).infer("mlp", [tensor])
    assert caught.value.status() == "400"


@pytest.mark.parametrize("index", range(4))
def test_bad_tensors_are_invalid_argument_over_grpc(server: ServerProcess, index: int) -> None:
    name, shape, datatype, data = _bad_requests()[index]
    tensor = triton_grpc.InferInput(name, shape, datatype)
    tensor.set_data_from_numpy(data)
    with pytest.raises(InferenceServerException) as caught:
        _grpc(server).infer("mlp", [tensor])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_an_invalid_value_names_its_record_and_feature(server: ServerProcess, transactions: Transactions) -> None:
    records = [dict(r) for r in transactions.records[:3]]
    records[2]["hour"] = 99  # the manifest says 0..23
    with pytest.raises(InferenceServerException) as caught:
        _http(server).infer("fraud", _fraud_inputs(triton_http, records))
    assert caught.value.status() == "400"
    assert "record 2, field 'hour'" in str(caught.value)
    x = _matrix(4)
    x[3, 5] = np.nan
    tensor = triton_grpc.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as caught:
        _grpc(server).infer("mlp", [tensor])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "record 3, field 'f5'" in str(caught.value)


# 120 bytes of binary data announced, 12 sent
_SHORT_BINARY = b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,30],"parameters":{"binary_data_size":120}}]}'


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"{not json", {}),
        (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [1]}]}', {}),
        (b'{"inputs": [{"name": "input", "datatype": "BF16", "shape": [1, 30], "data": []}]}', {}),
        (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 30], "data": ["a"]}]}', {}),
        (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 30], "data": []}]}', {}),
        (
            b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 30], "data": [1e300]}]}',
            {},
        ),
        (_SHORT_BINARY + b"\0" * 12, {"Inference-Header-Content-Length": str(len(_SHORT_BINARY))}),
        (b'{"inputs": []}', {"Inference-Header-Content-Length": "999"}),
        (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [0, 30], "data": []}]}', {}),
    ],
)
def test_malformed_bodies_are_400_with_an_error(server: ServerProcess, body: bytes, headers: dict[str, str]) -> None:
    answer = httpx.post(f"{server.url}/v2/models/mlp/infer", content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert set(answer.json()) >= {"error"}


def test_readiness_routes(server: ServerProcess) -> None:
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
    assert httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{server.url}/v2/models/mlp/versions/1/ready").status_code == 200
    assert httpx.get(f"{server.url}/v2/models/mlp/versions/2/ready").status_code == 404
    assert httpx.post(f"{server.url}/v2/models/mlp").status_code == 405
    assert httpx.get(f"{server.url}/v2/nothing").status_code == 404
