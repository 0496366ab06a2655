"""The data plane: loaded models, their batchers, the memory budget. Transports delegate here."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from sagegate.features import Row
from sagegate.manifest import MANIFEST_FILE
from sagegate.packaging.archive import ARCHIVE_FILE, extract_archive
from sagegate.server.batching import AdaptiveBatcher
from sagegate.server.config import ServerConfig
from sagegate.server.exceptions import (
    BadRequest,
    MemoryBudgetExceeded,
    ModelAlreadyLoaded,
    ModelLoadError,
    ModelNotFound,
    ModelRuntimeError,
    ServerError,
)
from sagegate.server.metrics import ServerMetrics
from sagegate.server.model import LoadedModel, Prediction, estimate_memory_mb
from sagegate.server.providers import choose_providers

__all__ = ["DataPlane", "ServedModel", "discover_packages"]

log = logging.getLogger("sagegate.server")

_INLINE_EXPLAIN = 8  # records an exact explanation computes on the event loop at most


@dataclass
class ServedModel:
    model: LoadedModel
    batcher: AdaptiveBatcher[Row, Prediction]
    # Numeric models only: requests that are one block of records (binary tensors, x-npy) queue
    # here as arrays and are answered as arrays (no Python object per record).
    blocks: AdaptiveBatcher[Any, Any] | None = None


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except OSError:
        return 0.0


def discover_packages(model_dir: Path, scratch: Path) -> list[tuple[str, Path]]:
    """(name, package dir) for a package at the root, in subfolders, or in model.tar.gz archives."""
    if not model_dir.is_dir():
        return []
    if (model_dir / MANIFEST_FILE).exists():
        return [(_manifest_name(model_dir), model_dir)]
    if (model_dir / ARCHIVE_FILE).exists():
        unpacked = extract_archive(model_dir / ARCHIVE_FILE, scratch / "root")
        return [(_manifest_name(unpacked), unpacked)]
    found = []
    for entry in sorted(model_dir.iterdir()):
        if entry.is_dir() and (entry / MANIFEST_FILE).exists():
            found.append((entry.name, entry))
        elif entry.is_file() and entry.name.endswith(".tar.gz"):
            name = entry.name.removesuffix(".tar.gz")
            found.append((name, extract_archive(entry, scratch / name)))
    return found


def _manifest_name(package_dir: Path) -> str:
    from sagegate.manifest import ModelManifest

    try:
        return ModelManifest.read(package_dir).name
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{package_dir}/manifest.json is invalid: {str(exc).splitlines()[0]}") from None


class DataPlane:
    def __init__(self, config: ServerConfig, metrics: ServerMetrics) -> None:
        import onnxruntime as ort

        self.config = config
        self.metrics = metrics
        self.models: dict[str, ServedModel] = {}
        self.ready = False
        self.providers = choose_providers(config.providers, ort.get_available_providers())
        self._load_lock = asyncio.Lock()
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loader")
        self._explainer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="explainer")
        self._scratch = Path(tempfile.mkdtemp(prefix="sagegate-models-"))

    @property
    def memory_used_mb(self) -> float:
        return sum(s.model.memory_mb for s in self.models.values())

    async def load_model_dir(self) -> None:
        """Loads every package in the model directory; /ping turns 200 when this returns."""
        loop = asyncio.get_running_loop()
        model_dir = self.config.model_dir
        if not self.config.multi_model and not model_dir.is_dir():
            raise ModelLoadError(f"no model directory at {model_dir}")
        packages = await loop.run_in_executor(self._loader, discover_packages, model_dir, self._scratch)
        if not packages and not self.config.multi_model:
            raise ModelLoadError(
                f"no model package in {model_dir} (a folder with manifest.json and model.onnx, or model.tar.gz)"
            )
        if not packages:
            log.info("no model package in %s: waiting for POST /models", model_dir)
        for name, path in packages:
            await self.load(name, path)
        # What is loaded now lives as long as the process: keep it out of every future GC pass,
        # so full collections stay short and do not show up as latency spikes.
        gc.collect()
        gc.freeze()
        self.ready = True

    async def load(self, name: str, path: Path) -> LoadedModel:
        async with self._load_lock:
            if name in self.models:
                raise ModelAlreadyLoaded(f"model {name!r} is already loaded", model=name)
            if not path.is_dir():
                raise ModelNotFound(f"no model package at {path}", model=name)
            estimate = estimate_memory_mb(path)
            budget = self.config.memory_budget_mb
            if self.memory_used_mb + estimate > budget:
                raise MemoryBudgetExceeded(
                    f"loading {name!r} needs about {estimate:.0f} MB; {self.memory_used_mb:.0f} of "
                    f"{budget} MB are in use",
                    model=name,
                )
            started, before = time.perf_counter(), _rss_mb()
            model = await asyncio.get_running_loop().run_in_executor(self._loader, self._load_sync, name, path)
            model.memory_mb = max(estimate, _rss_mb() - before)
            batcher: AdaptiveBatcher[Row, Prediction] = AdaptiveBatcher(
                model.predict_rows,
                max_batch_size=self.config.max_batch_size,
                max_delay=self.config.max_delay_ms / 1000,
                workers=self.config.batch_workers,
                inline_below=self.config.inline_below_ms / 1000,
                observe=self.metrics.batch_observer(name),
                name=name,
            )
            self.models[name] = ServedModel(model, batcher, self._block_batcher(model))
            self.metrics.models_loaded.set(len(self.models))
            self.metrics.memory_used.set(self.memory_used_mb)
            log.info(
                "loaded %s (%s v%s) on %s in %.2fs, %.0f MB",
                name,
                model.manifest.name,
                model.manifest.version,
                ",".join(model.providers),
                time.perf_counter() - started,
                model.memory_mb,
            )
            return model

    def _block_batcher(self, model: LoadedModel) -> AdaptiveBatcher[Any, Any] | None:
        if model.pipeline.categorical_features:
            return None
        return AdaptiveBatcher(
            cast(Any, model.predict_block),
            max_batch_size=self.config.max_batch_size,
            max_delay=self.config.max_delay_ms / 1000,
            workers=self.config.batch_workers,
            inline_below=self.config.inline_below_ms / 1000,
            observe=self.metrics.batch_observer(model.name),
            name=f"{model.name}-blocks",
            merge=cast(Any, _stack),
        )

    def _load_sync(self, name: str, path: Path) -> LoadedModel:
        model = LoadedModel.load(
            name,
            path,
            self.providers,
            self.config.intra_op_threads,
            self.config.inter_op_threads,
            spinning=self.config.spinning,
        )
        if self.config.warmup:
            try:
                model.warm_up(self.config.max_batch_size)
            except Exception as exc:
                raise ModelLoadError(
                    f"model {name!r} failed its warm-up: {str(exc).splitlines()[0]}", model=name
                ) from None
        return model

    async def unload(self, name: str) -> None:
        served = self.get(name)
        del self.models[name]
        await served.batcher.close()
        if served.blocks is not None:
            await served.blocks.close()
        self.metrics.models_loaded.set(len(self.models))
        self.metrics.memory_used.set(self.memory_used_mb)
        log.info("unloaded %s", name)

    def get(self, name: str) -> ServedModel:
        served = self.models.get(name)
        if served is None:
            raise ModelNotFound(f"model {name!r} is not loaded", model=name)
        return served

    def resolve(self, name: str | None) -> ServedModel:
        """The model an /invocations request is for: the named one, or the only one."""
        if name:
            return self.get(name)
        if len(self.models) == 1:
            return next(iter(self.models.values()))
        if not self.models:
            raise ModelNotFound("no model is loaded")
        raise BadRequest(
            f"{len(self.models)} models are loaded; name one with the CustomAttributes "
            "header (model=NAME) or POST /models/NAME/invoke"
        )

    async def predict(self, served: ServedModel, rows: Sequence[Row]) -> list[Prediction]:
        return cast(list[Prediction], await self._guarded(served, lambda: served.batcher.submit(rows)))

    async def predict_block(self, served: ServedModel, block: np.ndarray) -> np.ndarray:
        """The model's output block for a validated block of records (`FeaturePipeline.block_from_array`)."""
        blocks = served.blocks
        if blocks is None:
            raise BadRequest(f"model {served.model.name!r} takes text features: its records cannot be one block")
        return cast(np.ndarray, await self._guarded(served, lambda: blocks.submit(cast(Any, block))))

    async def _guarded(self, served: ServedModel, work: Callable[[], Awaitable[Any]], doing: str = "answer") -> Any:
        """`work` within the request timeout; a failure of the model is a 500 that names it (a
        refusal of the request stays what it is)."""
        try:
            async with asyncio.timeout(self.config.request_timeout_s):
                return await work()
        except ServerError:
            raise
        except TimeoutError:
            raise ModelRuntimeError(
                f"model {served.model.name!r} did not {doing} within {self.config.request_timeout_s:g}s",
                model=served.model.name,
            ) from None
        except Exception as exc:
            log.exception("model %s failed to %s", served.model.name, doing)
            raise ModelRuntimeError(
                f"model {served.model.name!r} failed to {doing}: {str(exc).splitlines()[0][:300]}",
                model=served.model.name,
            ) from None

    async def explain(self, served: ServedModel, rows: Sequence[Row]) -> list[dict[str, Any]]:
        """The rows' explanations. An exact one (tree, linear) is a few array operations: computed on
        the event loop, as a prediction's parsing is (in a thread, its many short numpy calls would
        trade the GIL with the event loop at every step and slow every other request). A sampled one
        is mostly one large ONNX Runtime call (which releases the GIL): in its own thread, one at a
        time, beside the batcher."""
        explainer = served.model.explainer
        if explainer is not None and explainer.spec.method != "permutation" and len(rows) <= _INLINE_EXPLAIN:

            async def inline() -> list[dict[str, Any]]:
                return served.model.explain_rows(rows)

            work = inline
        else:

            async def work() -> list[dict[str, Any]]:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._explainer, served.model.explain_rows, rows)

        return cast(list[dict[str, Any]], await self._guarded(served, work, "explain"))

    async def close(self) -> None:
        for name in list(self.models):
            await self.unload(name)
        self._loader.shutdown(wait=False)
        self._explainer.shutdown(wait=False)
        shutil.rmtree(self._scratch, ignore_errors=True)


def _stack(blocks: list[np.ndarray]) -> np.ndarray:
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
