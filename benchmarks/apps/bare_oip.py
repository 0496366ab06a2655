"""The floor of binary OIP on uvicorn: the least a Python server can do per request and still
answer one. It reads the JSON header and the FP32 tensor after it, applies the package's (affine)
feature transforms, runs ONNX Runtime on the calling thread and answers the positive class's probability
as binary data. No validation, no batching, no metrics, no error handling: a request it does not
expect fails. What sagegate's server does beyond this is what it costs over this app.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson

from sagegate.manifest import ModelManifest
from sagegate.validation import as_affine

PACKAGE = Path(os.environ["BARE_PACKAGE"])
MANIFEST = ModelManifest.read(PACKAGE)
OPTIONS = ort.SessionOptions()
OPTIONS.intra_op_num_threads = int(os.environ.get("BARE_THREADS", "1"))
SESSION = ort.InferenceSession(str(PACKAGE / "model.onnx"), OPTIONS, providers=["CPUExecutionProvider"])
AFFINE = [as_affine(f) or (1.0, 0.0) for f in MANIFEST.features]  # the benchmark's models: affine steps only
SCALE = np.array([a[0] for a in AFFINE], dtype=np.float32)
SHIFT = np.array([a[1] for a in AFFINE], dtype=np.float32)
INPUT, OUTPUT = MANIFEST.onnx_input, MANIFEST.outputs.onnx_output
PING = b'{"status":"healthy"}'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    if scope["path"] == "/ping":
        await _answer(send, PING, [])
        return
    body = b"".join(chunks)
    size = int(dict(scope["headers"])[b"inference-header-content-length"])
    shape = orjson.loads(body[:size])["inputs"][0]["shape"]
    x = np.frombuffer(body, dtype=np.float32, offset=size).reshape(shape)
    out = SESSION.run([OUTPUT], {INPUT: x * SCALE + SHIFT})[0]
    raw = out[:, 1].astype(np.float64).tobytes()
    header = orjson.dumps(
        {
            "model_name": MANIFEST.name,
            "outputs": [
                {
                    "name": "prediction",
                    "datatype": "FP64",
                    "shape": [len(x)],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
        }
    )
    await _answer(send, header + raw, [(b"inference-header-content-length", str(len(header)).encode())])


async def _answer(send: Any, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-type", b"application/octet-stream"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
