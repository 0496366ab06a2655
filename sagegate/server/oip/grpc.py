"""OIP v2 gRPC (`inference.GRPCInferenceService`, protos/grpc_predict_v2.proto) on a port of its own.

A grpc.aio server on the event loop of the HTTP server, over the same data plane, batchers and
models. Inputs come as `raw_input_contents` (one per input, in order) or as typed contents;
outputs always go as `raw_output_contents`, as Triton answers. The data plane's errors map to status
codes: 400 -> INVALID_ARGUMENT, 404 -> NOT_FOUND, 503 -> UNAVAILABLE, 507 -> RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import grpc
from grpc_reflection.v1alpha import reflection

from sagegate.server.exceptions import BadRequest, ModelNotFound, ServerError
from sagegate.server.oip import inference
from sagegate.server.oip.inference import InferRequest, RequestedOutput
from sagegate.server.oip.proto import grpc_predict_v2_pb2 as pb
from sagegate.server.oip.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from sagegate.server.oip.tensors import Tensor, from_data, from_raw, to_raw

if TYPE_CHECKING:
    from sagegate.server.app import InferenceApp

__all__ = ["InferenceServicer", "start_grpc"]

log = logging.getLogger("sagegate.server")

_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def status_code(error: ServerError) -> grpc.StatusCode:
    if error.status == 404:
        return grpc.StatusCode.NOT_FOUND
    if error.status == 503:
        return grpc.StatusCode.UNAVAILABLE
    if error.status == 507:
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if 400 <= error.status < 500:
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


def _tensor_metadata(specs: list[dict[str, Any]]) -> list[Any]:
    return [pb.ModelMetadataResponse.TensorMetadata(**spec) for spec in specs]


def _inputs(request: Any) -> list[Tensor]:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    tensors = []
    for i, spec in enumerate(request.inputs):
        shape = list(spec.shape)
        if raw:
            tensors.append(from_raw(spec.name, spec.datatype, shape, raw[i]))
            continue
        field = _CONTENTS.get(spec.datatype)
        if field is None:
            raise BadRequest(f"tensor {spec.name!r}: {spec.datatype!r} has no typed contents: send raw_input_contents")
        tensors.append(from_data(spec.name, spec.datatype, shape, list(getattr(spec.contents, field))))
    return tensors


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, app: InferenceApp) -> None:
        self.app = app

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.app.ready)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        try:
            inference.resolve(self.app._plane(), request.name, request.version or None)
        except ServerError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return pb.ServerMetadataResponse(**inference.server_metadata())

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        try:
            meta = inference.model_metadata(inference.resolve(self.app._plane(), request.name, request.version or None))
        except ServerError as exc:
            await context.abort(status_code(exc), exc.message)
        meta["inputs"] = _tensor_metadata(meta["inputs"])
        meta["outputs"] = _tensor_metadata(meta["outputs"])
        return pb.ModelMetadataResponse(**meta)

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        app = self.app
        try:
            if not request.model_name:
                raise ModelNotFound("model_name is required")
            served = inference.resolve(app._plane(), request.model_name, request.model_version or None)
            decoded = InferRequest(
                inputs=_inputs(request),
                outputs=[RequestedOutput(o.name) for o in request.outputs],
                id=request.id or None,
                binary_output=True,
            )
            response = await inference.infer(app._plane(), served, decoded, app.config.max_records)
        except ServerError as exc:
            app.metrics.errors.labels(request.model_name, type(exc).__name__).inc()
            await context.abort(status_code(exc), exc.message)
        except Exception as exc:  # a bug of ours: INTERNAL, and logged
            log.exception("ModelInfer %s failed", request.model_name)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")
        app.metrics.records_done(request.model_name, response.outputs[0][0].shape[0] if response.outputs else 0)
        return pb.ModelInferResponse(
            model_name=response.model_name,
            model_version=response.model_version,
            id=response.id or "",
            outputs=[
                pb.ModelInferResponse.InferOutputTensor(name=t.name, datatype=t.datatype, shape=list(t.shape))
                for t, _ in response.outputs
            ],
            raw_output_contents=[to_raw(t) for t, _ in response.outputs],
        )


async def start_grpc(app: InferenceApp, *, reuse_port: bool = False) -> grpc.aio.Server:
    """Serves the app's data plane over gRPC on `config.grpc_port`. `reuse_port`: worker processes
    share the port (SO_REUSEPORT); off otherwise, so that a port already taken is an error."""
    config = app.config
    limit = config.max_body_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 1 if reuse_port else 0),
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(app), server)  # type: ignore[no-untyped-call]
    # Server reflection: grpcurl, grpcui and Postman find the service and its messages without the proto.
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
    reflection.enable_server_reflection((service, reflection.SERVICE_NAME), server)
    address = f"{config.host}:{config.grpc_port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {address}")
    await server.start()
    return server
