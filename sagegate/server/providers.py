"""Which ONNX Runtime execution providers to use: what is configured, in order, and installed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["PROVIDER_NAMES", "choose_providers", "session_options"]

PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


def choose_providers(requested: Sequence[str], available: Sequence[str]) -> list[str]:
    """The requested providers that are installed, in the requested order, always ending with CPU."""
    unknown = [p for p in requested if p not in PROVIDER_NAMES]
    if unknown:
        raise ValueError(f"unknown execution provider {unknown[0]!r} (known: {', '.join(PROVIDER_NAMES)})")
    chosen = [PROVIDER_NAMES[p] for p in requested if PROVIDER_NAMES[p] in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def session_options(intra_op_threads: int, inter_op_threads: int, spinning: bool = True) -> Any:
    """`spinning`: ONNX Runtime's pool threads busy-wait for the next run (fast on a dedicated
    instance); off, they sleep, leaving the cores to the other processes of a shared machine."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    if inter_op_threads:
        options.inter_op_num_threads = inter_op_threads
    return options
