"""A model package loaded for serving: verified artifact, compiled preprocessing, an ORT session."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sagegate.features import FeaturePipeline, Row
from sagegate.manifest import MODEL_FILE, ModelManifest, Task
from sagegate.packaging.archive import sha256_file
from sagegate.server.exceptions import ModelLoadError, ModelOutputError
from sagegate.server.providers import session_options

__all__ = ["LoadedModel", "Prediction", "estimate_memory_mb", "read_package"]

Prediction = dict[str, Any]


def estimate_memory_mb(package_dir: Path) -> float:
    """What loading the package will take, before loading it: ORT holds about twice the files."""
    files = [package_dir / MODEL_FILE]
    with contextlib.suppress(OSError, ValueError):
        files += [package_dir / name for name in ModelManifest.read(package_dir).extra_files]
    size = sum(f.stat().st_size for f in files if f.exists())
    return 2.0 * size / (1024 * 1024) + 1.0


def read_package(package_dir: Path) -> ModelManifest:
    """The manifest, once model.onnx (and any data files beside it) have the sha256 it says: refusing
    a modified artifact. Hashed as a stream: a model may be larger than memory."""
    try:
        manifest = ModelManifest.read(package_dir)
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{package_dir} is not a model package: {Path(exc.filename).name} is missing") from None
    except ValueError as exc:
        raise ModelLoadError(f"{package_dir}/manifest.json is invalid: {str(exc).splitlines()[0]}") from None
    for name, expected in {MODEL_FILE: manifest.sha256, **manifest.extra_files}.items():
        try:
            digest = sha256_file(package_dir / name)
        except FileNotFoundError:
            raise ModelLoadError(f"{package_dir} is not a model package: {name} is missing") from None
        if digest != expected:
            raise ModelLoadError(
                f"{package_dir}/{name} has sha256 {digest[:12]}..., the manifest says {expected[:12]}...; "
                "refusing to serve a modified artifact"
            )
    return manifest


@dataclass
class LoadedModel:
    name: str
    url: str
    manifest: ModelManifest
    session: Any
    pipeline: FeaturePipeline
    memory_mb: float = 0.0
    _labels: list[str] = field(default_factory=list)
    explainer: Any = None  # sagegate.explain.Explainer, where the package has one

    @classmethod
    def load(
        cls,
        name: str,
        package_dir: Path,
        providers: Sequence[str],
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        *,
        spinning: bool = True,
    ) -> LoadedModel:
        import onnxruntime as ort

        manifest = read_package(package_dir)
        try:  # from the path: ORT reads the weights there (and any external data beside them)
            session = ort.InferenceSession(
                str(package_dir / MODEL_FILE),
                sess_options=session_options(intra_op_threads, inter_op_threads, spinning),
                providers=list(providers),
            )
        except Exception as exc:
            raise ModelLoadError(
                f"ONNX Runtime cannot load {package_dir}/model.onnx: {str(exc).splitlines()[0][:300]}"
            ) from None
        outputs = {o.name for o in session.get_outputs()}
        if manifest.outputs.onnx_output not in outputs:
            raise ModelLoadError(f"model {name}: the ONNX graph has no output {manifest.outputs.onnx_output!r}")
        pipeline = FeaturePipeline.for_manifest(manifest)
        loaded = cls(
            name=name,
            url=str(package_dir),
            manifest=manifest,
            session=session,
            pipeline=pipeline,
            _labels=list(manifest.outputs.labels or []),
        )
        if manifest.explainer is not None:
            from sagegate.explain import Explainer

            try:
                loaded.explainer = Explainer.load(package_dir, manifest, lambda feed: loaded.infer(dict(feed)))
            except (OSError, ValueError, KeyError) as exc:
                raise ModelLoadError(f"model {name}: its explainer cannot be read: {exc}") from None
        return loaded

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

    def infer(self, inputs: dict[str, np.ndarray] | np.ndarray) -> np.ndarray:
        """The model's output for its inputs (a matrix model's matrix may be given alone)."""
        feed = self.pipeline.feed(inputs) if isinstance(inputs, dict) else {self.manifest.onnx_input: inputs}
        out = self.session.run([self.manifest.outputs.onnx_output], feed)[0]
        return np.asarray(out)

    def explain_rows(self, rows: Sequence[Row]) -> list[dict[str, Any]]:
        """Per validated row, its explanation (sagegate.explain); the model must have an explainer."""
        from sagegate.server.exceptions import NoExplainer

        if self.explainer is None:
            raise NoExplainer(
                f"model {self.name} (v{self.manifest.version}) has no explainer: package it again with"
                " explanations on (the default) to explain its predictions",
                model=self.name,
            )
        inputs = self.pipeline.inputs(rows)
        # which class a record is explained for: its predicted one (the model is asked again only then)
        outputs = self.infer(inputs) if self.manifest.outputs.task is Task.MULTICLASS else None
        explanations: list[dict[str, Any]] = self.explainer.explain(inputs, outputs)
        return explanations

    @staticmethod
    def unanswered(out: np.ndarray) -> np.ndarray:
        """Per record, whether the model's output holds a value that is not a finite number (JSON would
        carry it as null: a wrong answer, never sent)."""
        finite = np.isfinite(out)
        return ~(finite.reshape(len(out), -1).all(axis=1)) if out.size else np.zeros(len(out), dtype=bool)

    def predict_rows(self, rows: Sequence[Row]) -> list[Prediction]:
        """Preprocess, infer and postprocess a batch of validated rows (runs in a worker thread)."""
        out = self.infer(self.pipeline.inputs(rows))
        bad = self.unanswered(out)
        if bad.any():
            raise ModelOutputError(
                f"model {self.name} answered a value that is not a number for {int(bad.sum())} of {len(out)} records"
            )
        return self.postprocess(out)

    def predict_block(self, block: np.ndarray) -> np.ndarray:
        """`predict_rows` for a validated numeric block (`FeaturePipeline.block_from_array`), with no
        Python object per record: the model's output block, checked the same way."""
        out = self.infer(self.pipeline.block_inputs(block, [], len(block)))
        bad = self.unanswered(out)
        if bad.any():
            raise ModelOutputError(
                f"model {self.name} answered a value that is not a number for {int(bad.sum())} of {len(out)} records"
            )
        return out

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
            "explainer": None
            if m.explainer is None
            else {"method": m.explainer.method, "output_space": m.explainer.output_space},
            "featureImportance": m.explainer.importance if m.explainer is not None else None,
        }
