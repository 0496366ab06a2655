"""The naive baseline: a FastAPI endpoint that validates with pydantic and calls ONNX Runtime per request.

This is what most teams write first (and what many tutorials show): no batching, a thread per
request from FastAPI's pool, the same model and the same answer as sagegate's server.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel

from sagegate.manifest import ModelManifest

PACKAGE = Path(os.environ["NAIVE_PACKAGE"])
MANIFEST = ModelManifest.read(PACKAGE)
OPTIONS = ort.SessionOptions()
OPTIONS.intra_op_num_threads = int(os.environ.get("NAIVE_THREADS", "1"))
SESSION = ort.InferenceSession(str(PACKAGE / "model.onnx"), OPTIONS, providers=["CPUExecutionProvider"])
NAMES = [f.name for f in MANIFEST.features]
MEAN = np.array([f.transforms[0].mean for f in MANIFEST.features], dtype=np.float32)  # type: ignore[union-attr]
STD = np.array([f.transforms[0].std for f in MANIFEST.features], dtype=np.float32)  # type: ignore[union-attr]
LABELS = MANIFEST.outputs.labels or ["negative", "positive"]

app = FastAPI()


class Instances(BaseModel):
    instances: list[dict[str, float]]


class Prediction(BaseModel):
    prediction: float
    label: str
    confidence: float


class Predictions(BaseModel):
    predictions: list[Prediction]


@app.get("/ping")
def ping() -> dict[str, str]:
    return {"status": "healthy"}


@app.post("/invocations")
def invocations(body: Instances) -> Predictions:
    x = (np.array([[r[n] for n in NAMES] for r in body.instances], dtype=np.float32) - MEAN) / STD
    positive = SESSION.run([MANIFEST.outputs.onnx_output], {"input": x})[0][:, 1]
    return Predictions(
        predictions=[
            Prediction(prediction=float(p), label=LABELS[int(p >= 0.5)], confidence=float(max(p, 1 - p)))
            for p in positive
        ]
    )
