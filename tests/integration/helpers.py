from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
from prometheus_client.parser import text_string_to_metric_families

from sagegate.features import FeaturePipeline
from sagegate.packaging import BuiltPackage


def metric(client: httpx.Client, url: str, name: str, **labels: str) -> float:
    """The value of one sample on GET /metrics (0 when absent)."""
    text = client.get(f"{url}/metrics").text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def expected_positive(built: BuiltPackage, records: list[dict[str, Any]]) -> np.ndarray:
    """P(positive) computed in-process with ONNX Runtime, for comparison with the server's answers."""
    x = FeaturePipeline(built.manifest.features).transform_records(records)
    session = ort.InferenceSession(str(built.path / "model.onnx"))
    return np.asarray(session.run([built.manifest.outputs.onnx_output], {"input": x})[0])[:, 1]
