"""Calls a server with the KServe Python SDK's Open Inference Protocol clients and prints what they
answered, for tests/integration/test_oip_kserve.py to judge (this script judges nothing).

It runs in the SDK's own environment (`.venv/kserve`, made by `make setup`): kserve pins pandas and
other packages below what `.venv` needs, so it cannot be imported beside sagegate. Usage:

    .venv/kserve/bin/python tests/integration/kserve_probe.py PLAN.json

PLAN: {"rest": "http://host:port", "grpc": "host:port", "models": [names whose readiness to ask],
"infer": [{"key", "model", "version"?, "transport": "rest" | "rest-binary" | "grpc", "inputs":
[{"name", "datatype", "shape", "data": flat list}], "outputs"?: [names], "binary_outputs"?: bool}]}.
Printed: {"health": {"rest" | "grpc": {"live", "ready", "models": {name: bool or error}}},
"infer": {key: {"id", "model_name", "model_version", "outputs": {name: {"datatype", "shape",
"data"}}} or {"error": {"kind", "status", "message"}}}}.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import grpc
import httpx
import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

NUMPY = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_}


def _array(spec: dict[str, Any]) -> np.ndarray:
    if spec["datatype"] == "BYTES":
        values = [v.encode() for v in spec["data"]]
        return np.array(values, dtype=object).reshape(spec["shape"])
    return np.array(spec["data"], dtype=NUMPY[spec["datatype"]]).reshape(spec["shape"])


def _request(case: dict[str, Any], binary: bool) -> InferRequest:
    inputs = []
    for spec in case["inputs"]:
        tensor = InferInput(spec["name"], list(spec["shape"]), spec["datatype"])
        tensor.set_data_from_numpy(_array(spec), binary_data=binary)
        inputs.append(tensor)
    outputs = None
    if case.get("outputs"):
        parameters = {"binary_data": bool(case.get("binary_outputs"))}
        outputs = [RequestedOutput(name, parameters=parameters) for name in case["outputs"]]
    parameters = {"binary_data_output": True} if case.get("binary_outputs") and not outputs else None
    return InferRequest(
        model_name=case["model"],
        infer_inputs=inputs,
        request_id=case["key"],
        request_outputs=outputs,
        parameters=parameters,
        model_version=case.get("version"),
    )


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _answer(response: Any) -> dict[str, Any]:
    outputs = {}
    for output in response.outputs:
        array = output.as_numpy()
        outputs[output.name] = {"datatype": output.datatype, "shape": list(array.shape), "data": _plain(array.tolist())}
    return {
        "id": response.id,
        "model_name": response.model_name,
        "model_version": response.model_version,
        "outputs": outputs,
    }


def _error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, httpx.HTTPStatusError):
        return {"kind": "http", "status": exc.response.status_code, "message": str(exc)}
    if isinstance(exc, grpc.RpcError):
        return {"kind": "grpc", "status": exc.code().name, "message": exc.details() or ""}
    return {"kind": type(exc).__name__, "status": None, "message": str(exc)}


async def _guarded(call: Any, then: Any = None) -> Any:
    """What the call answered (through `then`), or the error the client raised."""
    try:
        answer = await call
    except (httpx.HTTPStatusError, grpc.RpcError) as exc:
        return {"error": _error(exc)}
    return then(answer) if then is not None else answer


async def main(plan: dict[str, Any]) -> dict[str, Any]:
    rest = InferenceRESTClient(RESTConfig(protocol="v2", retries=1, timeout=30))
    grpc_client = InferenceGRPCClient(plan["grpc"], timeout=30)
    base = plan["rest"]
    health = {
        "rest": {
            "live": await rest.is_server_live(base),
            "ready": await rest.is_server_ready(base),
            "models": {m: await _guarded(rest.is_model_ready(base, m)) for m in plan["models"]},
        },
        "grpc": {
            "live": await grpc_client.is_server_live(),
            "ready": await grpc_client.is_server_ready(),
            "models": {m: await _guarded(grpc_client.is_model_ready(m)) for m in plan["models"]},
        },
    }
    answers: dict[str, Any] = {}
    for case in plan["infer"]:
        transport = case["transport"]
        request = _request(case, binary=transport != "rest")
        if transport == "grpc":
            call = grpc_client.infer(request)
        else:
            call = rest.infer(base, request, model_name=case["model"])
        answers[case["key"]] = await _guarded(call, _answer)
    await rest.close()
    await grpc_client.close()
    return {"health": health, "infer": answers}


if __name__ == "__main__":
    with open(sys.argv[1]) as plan_file:
        print(json.dumps(asyncio.run(main(json.load(plan_file)))))
