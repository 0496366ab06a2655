"""Open Inference Protocol v2 conformance, proven with clients sagegate did not write: tritonclient's
HTTP and gRPC clients (and its generated gRPC stubs for typed contents), and the KServe SDK's REST
and gRPC clients, against `sagegate serve`
running as a process, serving a real ONNX classifier with text features (fraud, scikit-learn) and a
numeric MLP. Every answer is checked against the same records sent to /invocations."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
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


def _int_matrix() -> np.ndarray:
    return np.random.default_rng(2).integers(-3, 4, size=(10, N_FEATURES)).astype(np.int64)


def _tri_matrix() -> np.ndarray:
    return np.random.default_rng(4).normal(size=(12, 2))


def _fraud_columns(records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    return {name: np.array([[r[name]] for r in records]) for name in records[0]}


_DATATYPES = {"f": "FP32", "i": "INT64", "b": "BOOL", "U": "BYTES"}


def _fraud_tensors(records: list[dict[str, Any]]) -> list[tuple[str, str, np.ndarray]]:
    """(name, datatype, data) of one input per feature: float features as FP32."""
    tensors = []
    for name, column in _fraud_columns(records).items():
        datatype = _DATATYPES[column.dtype.kind]
        tensors.append((name, datatype, column.astype(np.float32) if datatype == "FP32" else column))
    return tensors


def _fraud_inputs(module: Any, records: list[dict[str, Any]], binary: bool = True) -> list[Any]:
    inputs = []
    for name, datatype, column in _fraud_tensors(records):
        data = column.astype(object) if datatype == "BYTES" else column
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
    x = _int_matrix()
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
    x = _tri_matrix()
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


# -- KServe's clients (the kserve SDK's InferenceRESTClient and InferenceGRPCClient) -------------

# The SDK has an environment of its own (`make setup`): its pins (pandas) would downgrade ours. The
# probe only reports what the SDK's clients answered; the judging is here.
KSERVE_PYTHON = Path(sys.prefix) / "kserve" / "bin" / "python"
KSERVE_PROBE = Path(__file__).with_name("kserve_probe.py")
_TRANSPORTS = ("rest", "rest-binary", "grpc")


def _tensor_spec(name: str, data: np.ndarray, datatype: str) -> dict[str, Any]:
    flat = data.reshape(-1).tolist()
    return {"name": name, "datatype": datatype, "shape": list(data.shape), "data": flat}


def _kserve_plan(server: ServerProcess, records: list[dict[str, Any]]) -> dict[str, Any]:
    fraud_inputs = [_tensor_spec(name, data, datatype) for name, datatype, data in _fraud_tensors(records)]
    cases: list[dict[str, Any]] = []
    for transport in _TRANSPORTS:
        each = [
            {"key": f"fp32-{transport}", "model": "mlp", "inputs": [_tensor_spec("input", _matrix(40), "FP32")]},
            {"key": f"int64-{transport}", "model": "mlp", "inputs": [_tensor_spec("input", _int_matrix(), "INT64")]},
            {"key": f"fraud-{transport}", "model": "fraud", "inputs": fraud_inputs},
            {"key": f"tri-{transport}", "model": "tri", "inputs": [_tensor_spec("input", _tri_matrix(), "FP64")]},
            {"key": f"unknown-{transport}", "model": "nope", "inputs": [_tensor_spec("input", _matrix(1), "FP32")]},
            {
                "key": f"width-{transport}",
                "model": "mlp",
                "inputs": [_tensor_spec("input", _matrix(2)[:, :-1], "FP32")],
            },
            {
                "key": f"bytes-{transport}",
                "model": "mlp",
                "inputs": [_tensor_spec("input", np.array([["x"] * N_FEATURES]), "BYTES")],
            },
        ]
        cases += [{**case, "transport": transport} for case in each]
    cases.append(
        {
            "key": "binary-outputs",
            "transport": "rest-binary",
            "model": "mlp",
            "inputs": [_tensor_spec("input", _matrix(40), "FP32")],
            "outputs": ["prediction", "confidence"],
            "binary_outputs": True,
        }
    )
    return {
        "rest": server.url,
        "grpc": f"127.0.0.1:{server.grpc_port}",  # type: ignore[attr-defined]
        "models": ["mlp", "fraud", "nope"],
        "infer": cases,
    }


@pytest.fixture(scope="module")
def kserve_answers(server: ServerProcess, transactions: Transactions) -> dict[str, Any]:
    if not KSERVE_PYTHON.exists():
        pytest.fail(f"the KServe SDK's environment is not at {KSERVE_PYTHON}: run `make setup`")
    plan = Path(server.log_path).with_name("kserve-plan.json")
    plan.write_text(json.dumps(_kserve_plan(server, transactions.records[:25])))
    done = subprocess.run(
        [str(KSERVE_PYTHON), str(KSERVE_PROBE), str(plan)], check=False, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answers: dict[str, Any] = json.loads(done.stdout)
    return answers


def _output(answers: dict[str, Any], key: str, name: str) -> Any:
    answer = answers["infer"][key]
    assert "error" not in answer, answer
    return answer["outputs"][name]["data"]


def test_kserve_clients_see_the_server_and_its_models(kserve_answers: dict[str, Any]) -> None:
    rest, over_grpc = kserve_answers["health"]["rest"], kserve_answers["health"]["grpc"]
    assert rest["live"] is rest["ready"] is over_grpc["live"] is over_grpc["ready"] is True
    # an unknown model is not ready (REST: 404; gRPC: ready false, as tritonclient reads it above)
    assert rest["models"] == over_grpc["models"] == {"mlp": True, "fraud": True, "nope": False}


@pytest.mark.parametrize("transport", _TRANSPORTS)
def test_kserve_clients_infer_numeric_tensors_as_invocations(
    server: ServerProcess, kserve_answers: dict[str, Any], transport: str
) -> None:
    expected = _invocations(server, "mlp", _matrix(40).astype(np.float64).tolist())
    answer = kserve_answers["infer"][f"fp32-{transport}"]
    assert answer.get("model_name") == "mlp", answer
    assert answer["id"] == f"fp32-{transport}"
    np.testing.assert_allclose(
        _output(kserve_answers, f"fp32-{transport}", "prediction"), [p["prediction"] for p in expected], rtol=1e-6
    )
    assert _output(kserve_answers, f"fp32-{transport}", "label") == [p["label"] for p in expected]
    integers = _invocations(server, "mlp", _int_matrix().tolist())
    np.testing.assert_allclose(
        _output(kserve_answers, f"int64-{transport}", "prediction"), [p["prediction"] for p in integers], rtol=1e-6
    )


@pytest.mark.parametrize("transport", _TRANSPORTS)
def test_kserve_clients_infer_fp32_int64_bytes_and_bool_inputs(
    server: ServerProcess,
    kserve_answers: dict[str, Any],
    fraud_logreg: BuiltPackage,
    transactions: Transactions,
    transport: str,
) -> None:
    records = transactions.records[:25]
    prediction = _output(kserve_answers, f"fraud-{transport}", "prediction")
    np.testing.assert_allclose(prediction, expected_positive(fraud_logreg, records), atol=1e-6)
    assert _output(kserve_answers, f"fraud-{transport}", "label") == [
        p["label"] for p in _invocations(server, "fraud", records)
    ]
    expected = _invocations(server, "tri", _tri_matrix().tolist())
    assert _output(kserve_answers, f"tri-{transport}", "prediction") == [p["prediction"] for p in expected]
    probabilities = _output(kserve_answers, f"tri-{transport}", "probabilities")
    np.testing.assert_allclose(
        probabilities, [[p["probabilities"][k] for k in ("low", "mid", "high")] for p in expected], rtol=1e-6
    )


def test_kserve_rest_client_takes_binary_outputs(server: ServerProcess, kserve_answers: dict[str, Any]) -> None:
    expected = _invocations(server, "mlp", _matrix(40).astype(np.float64).tolist())
    assert set(kserve_answers["infer"]["binary-outputs"]["outputs"]) == {"prediction", "confidence"}
    np.testing.assert_allclose(
        _output(kserve_answers, "binary-outputs", "confidence"), [p["confidence"] for p in expected], rtol=1e-6
    )


@pytest.mark.parametrize("transport", _TRANSPORTS)
def test_kserve_clients_get_not_found_and_invalid_argument(kserve_answers: dict[str, Any], transport: str) -> None:
    status = {"unknown": 404, "width": 400, "bytes": 400}
    if transport == "grpc":
        status = {"unknown": "NOT_FOUND", "width": "INVALID_ARGUMENT", "bytes": "INVALID_ARGUMENT"}
    for case, expected in status.items():
        error = kserve_answers["infer"][f"{case}-{transport}"].get("error")
        assert error is not None, (case, kserve_answers["infer"][f"{case}-{transport}"])
        assert error["status"] == expected, (case, error)
    assert "nope" in kserve_answers["infer"][f"unknown-{transport}"]["error"]["message"]


# -- gRPC server reflection, as grpcurl uses it, with the README's grpcurl requests -------------

README = Path(__file__).parents[2] / "README.md"


def _readme_grpcurl_calls() -> list[tuple[str, dict[str, Any]]]:
    """(method, request) of each grpcurl command in the README's grpcurl block."""
    text = README.read_text()
    start = text.index("```bash\ngrpcurl ")
    block = text[start : text.index("```", start + 3)]
    calls = []
    for command in block.split("grpcurl ")[1:]:
        body = command[command.index("-d '") + 4 : command.index("'", command.index("-d '") + 4)]
        method = command.split()[-1].rsplit("/", 1)[1]
        calls.append((method, json.loads(body)))
    return calls


def test_reflection_describes_the_service_and_answers_the_readme_grpcurl_requests(
    server: ServerProcess, fraud_logreg: BuiltPackage
) -> None:
    """What grpcurl does without -proto: list the services by reflection, build each request from the
    reflected descriptors with protobuf's JSON mapping (base64 for bytes), call, read the answer."""
    from google.protobuf import descriptor_pool, json_format, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    calls = _readme_grpcurl_calls()
    assert [method for method, _ in calls] == ["ModelMetadata", "ModelInfer"]
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:  # type: ignore[attr-defined]
        database = ProtoReflectionDescriptorDatabase(channel)
        assert "inference.GRPCInferenceService" in set(database.get_services())
        pool = descriptor_pool.DescriptorPool(database)  # its own pool: not tritonclient's `inference`
        service = pool.FindServiceByName("inference.GRPCInferenceService")
        answers = {}
        for method_name, body in calls:
            method = service.FindMethodByName(method_name)
            request_class = message_factory.GetMessageClass(method.input_type)
            response_class = message_factory.GetMessageClass(method.output_type)
            call = channel.unary_unary(
                f"/{service.full_name}/{method.name}",
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            )
            answers[method_name] = call(json_format.Parse(json.dumps(body), request_class()), timeout=30)
    metadata = answers["ModelMetadata"]
    assert metadata.name == "fraud"
    assert {i.name for i in metadata.inputs} == {f["name"] for f in fraud_logreg.manifest.model_dump()["features"]}
    infer = answers["ModelInfer"]
    names = [o.name for o in infer.outputs]
    prediction = np.frombuffer(infer.raw_output_contents[names.index("prediction")], dtype="<f8")
    record = {i["name"]: _readme_value(i) for i in calls[1][1]["inputs"]}
    np.testing.assert_allclose(prediction, [_invocations(server, "fraud", [record])[0]["prediction"]], rtol=1e-9)


def _readme_value(tensor: dict[str, Any]) -> Any:
    import base64

    ((field, (value,)),) = tensor["contents"].items()
    return base64.b64decode(value).decode() if field == "bytes_contents" else value
