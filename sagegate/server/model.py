"""A model package loaded for serving: verified artifact, compiled preprocessing, an ORT session."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sagegate.features import FeaturePipeline, Row
from sagegate.manifest import MODEL_FILE, ModelManifest, Task
from sagegate.server.exceptions import ModelLoadError, ModelOutputError
from sagegate.server.providers import session_options

__all__ = ["LoadedModel", "Prediction", "estimate_memory_mb", "read_package"]

Prediction = dict[str, Any]


def estimate_memory_mb(package_dir: Path) -> float:
    """What loading the package will take, before loading it: ORT holds about twice the file."""
    size = (package_dir / MODEL_FILE).stat().st_size if (package_dir / MODEL_FILE).exists() else 0
    return 2.0 * size / (1024 * 1024) + 1.0


def read_package(package_dir: Path) -> tuple[ModelManifest, bytes]:
    """The manifest and the ONNX bytes, refusing an artifact whose sha256 differs from the manifest's."""
    try:
        manifest = ModelManifest.read(package_dir)
        data = (package_dir / MODEL_FILE).read_bytes()
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{package_dir} is not a model package: {Path(exc.filename).name} is missing") from None
    except ValueError as exc:
        raise ModelLoadError(f"{package_dir}/manifest.json is invalid: {str(exc).splitlines()[0]}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest.sha256:
        raise ModelLoadError(
            f"{package_dir}/model.onnx has sha256 {digest[:12]}..., the manifest says {manifest.sha256[:12]}...; "
            "refusing to serve a modified artifact"
        )
    return manifest, data


@dataclass
class LoadedModel:
    name: str
    url: str
    manifest: ModelManifest
    session: Any
    pipeline: FeaturePipeline
    memory_mb: float = 0.0
    _labels: list[str] = field(default_factory=list)

    @classmethod
    def load(
        cls,
        name: str,
        package_dir: Path,
        providers: Sequence[str],
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
    ) -> LoadedModel:
        import onnxruntime as ort

        manifest, data = read_package(package_dir)
        try:
            session = ort.InferenceSession(
                data, sess_options=session_options(intra_op_threads, inter_op_threads), providers=list(providers)
            )
        except Exception as exc:
            raise ModelLoadError(
                f"ONNX Runtime cannot load {package_dir}/model.onnx: {str(exc).splitlines()[0][:300]}"
            ) from None
        outputs = {o.name for o in session.get_outputs()}
        if manifest.outputs.onnx_output not in outputs:
            raise ModelLoadError(f"model {name}: the ONNX graph has no output {manifest.outputs.onnx_output!r}")
        pipeline = FeaturePipeline(manifest.features)
        return cls(
            name=name,
            url=str(package_dir),
            manifest=manifest,
            session=session,
            pipeline=pipeline,
            _labels=list(manifest.outputs.labels or []),
        )

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def warm_up(self, max_batch_size: int) -> list[int]:
        """Runs the manifest's sample at every batch size the batcher will form (powers of two and the max)."""
        rows = self.pipeline.rows_from_records(self.manifest.sample)
        sizes = sorted({min(2**i, max_batch_size) for i in range(max_batch_size.bit_length() + 1)})
        for size in sizes:
            batch = [rows[i % len(rows)] for i in range(size)]
            self.predict_rows(batch)
        return sizes

    def infer(self, x: np.ndarray) -> np.ndarray:
        out = self.session.run([self.manifest.outputs.onnx_output], {self.manifest.onnx_input: x})[0]
        return np.asarray(out)

    @staticmethod
    def unanswered(out: np.ndarray) -> np.ndarray:
        """Per record, whether the model's output holds a value that is not a finite number (JSON would
        carry it as null: a wrong answer, never sent)."""
        finite = np.isfinite(out)
        return ~(finite.reshape(len(out), -1).all(axis=1)) if out.size else np.zeros(len(out), dtype=bool)

    def predict_rows(self, rows: Sequence[Row]) -> list[Prediction]:
        """Preprocess, infer and postprocess a batch of validated rows (runs in a worker thread)."""
        out = self.infer(self.pipeline.transform(rows))
        bad = self.unanswered(out)
        if bad.any():
            raise ModelOutputError(
                f"model {self.name} answered a value that is not a number for {int(bad.sum())} of {len(out)} records"
            )
        return self.postprocess(out)

    def postprocess(self, out: np.ndarray) -> list[Prediction]:
        outputs = self.manifest.outputs
        if outputs.task is Task.REGRESSION:
            return [{"prediction": v, "label": None, "confidence": None} for v in out.reshape(-1).tolist()]
        labels = self._labels
        if outputs.task is Task.BINARY:
            positive = out[:, 1]
            chosen = positive >= outputs.threshold
            confidence = np.where(chosen, positive, 1.0 - positive)
            negative_label, positive_label = labels
            return [
                {"prediction": p, "label": positive_label if c else negative_label, "confidence": q}
                for p, c, q in zip(positive.tolist(), chosen.tolist(), confidence.tolist(), strict=True)
            ]
        best = np.argmax(out, axis=1)
        confidence = out[np.arange(len(out)), best]
        return [
            {
                "prediction": labels[b],
                "label": labels[b],
                "confidence": q,
                "probabilities": dict(zip(labels, probs, strict=True)),
            }
            for b, q, probs in zip(best.tolist(), confidence.tolist(), out.tolist(), strict=True)
        ]

    def postprocess_columns(self, out: np.ndarray) -> dict[str, Any]:
        """The same answers as `postprocess`, as columns (prediction, label, confidence): the batch
        engine writes them to columnar files without a Python object per record."""
        outputs = self.manifest.outputs
        if outputs.task is Task.REGRESSION:
            values = out.reshape(-1).astype(np.float64)
            return {"prediction": values, "label": None, "confidence": np.full(len(values), np.nan)}
        # Labels as (codes, names): a columnar writer stores them dictionary-encoded, no string per row.
        if outputs.task is Task.BINARY:
            positive = out[:, 1].astype(np.float64)
            chosen = positive >= outputs.threshold
            return {
                "prediction": positive,
                "label": (chosen.astype(np.int32), self._labels),
                "confidence": np.where(chosen, positive, 1.0 - positive),
            }
        best = np.argmax(out, axis=1)
        return {
            "prediction": np.array(self._labels)[best],
            "label": (best.astype(np.int32), self._labels),
            "confidence": out[np.arange(len(out)), best].astype(np.float64),
        }

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "modelName": self.name,
            "modelUrl": self.url,
            "name": m.name,
            "version": m.version,
            "framework": m.framework.value,
            "task": m.outputs.task.value,
            "sha256": m.sha256,
            "providers": self.providers,
            "memoryMB": round(self.memory_mb, 1),
            "features": [f.name for f in m.features],
        }
