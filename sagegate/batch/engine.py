"""The batch inference engine: stream records in, predictions out, resumable after a kill.

Input is a file or a folder of files (each file a shard) in CSV, JSON Lines or Parquet, read by
pyarrow in fixed-size chunks, so memory stays flat in the input's size. Each chunk is validated
column by column, run through the model package with the server's own preprocessing, and written
as one part file (atomically: a temporary name, then a rename), after which the checkpoint records
the chunk. A run that is killed and started again skips the recorded chunks and rewrites any part
that was renamed but not yet recorded (the same rows give the same bytes), so every row ends up
in the output exactly once. At the end each shard's parts are joined: CSV and JSON Lines into one file, Parquet into one
dataset folder (the parts renamed, not rewritten).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from sagegate.batch.columns import ColumnBatch, validate_columns
from sagegate.server.model import LoadedModel

__all__ = ["FORMATS", "BatchSummary", "count_rows", "run_batch", "shards"]

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
_EXTENSIONS = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet"}
_BLOCK = 16 << 20  # bytes per CSV/JSON read block


@dataclass
class BatchSummary:
    rows: int = 0
    predicted: int = 0
    rejected: int = 0
    skipped_chunks: int = 0
    shards: dict[str, dict[str, int]] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)


def shards(source: Path) -> list[Path]:
    files = sorted(p for p in source.iterdir() if p.suffix in FORMATS) if source.is_dir() else [source]
    if not files:
        raise ValueError(f"no CSV, JSON Lines or Parquet files in {source}")
    for f in files:
        if f.suffix not in FORMATS:
            raise ValueError(f"{f}: unknown format (use .csv, .jsonl or .parquet)")
    return files


def count_rows(path: Path) -> int:
    if FORMATS[path.suffix] == "parquet":
        return int(pq.ParquetFile(path).metadata.num_rows)
    lines = 0
    with path.open("rb") as fh:
        while block := fh.read(_BLOCK):
            lines += block.count(b"\n")
    with path.open("rb") as fh:  # a last line without a newline still counts
        fh.seek(max(path.stat().st_size - 1, 0))
        last = fh.read(1)
    lines += last not in (b"\n", b"")
    return lines - 1 if FORMATS[path.suffix] == "csv" else lines


def _batches(path: Path) -> Iterator[pa.RecordBatch]:
    kind = FORMATS[path.suffix]
    if kind == "parquet":
        yield from pq.ParquetFile(path).iter_batches(batch_size=65_536)
    elif kind == "csv":
        yield from pa_csv.open_csv(path, read_options=pa_csv.ReadOptions(block_size=_BLOCK))
    else:
        yield from pa_json.open_json(path, read_options=pa_json.ReadOptions(block_size=_BLOCK))


def _chunks(path: Path, rows: int) -> Iterator[pa.Table]:
    """Fixed-size chunks whatever the reader's batch sizes, so chunk i is always the same rows."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in _batches(path):
        rest = batch
        while rest.num_rows:
            take = min(rows - held, rest.num_rows)
            pending.append(rest.slice(0, take))
            held += take
            rest = rest.slice(take)
            if held == rows:
                yield pa.Table.from_batches(pending)
                pending, held = [], 0
    if held:
        yield pa.Table.from_batches(pending)


def _write(table: pa.Table, path: Path, kind: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if kind == "parquet":
        pq.write_table(table, tmp)
    elif kind == "csv":
        plain = table.cast(
            pa.schema(
                [
                    pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
                    for f in table.schema
                ]
            )
        )
        pa_csv.write_csv(plain, tmp, write_options=pa_csv.WriteOptions(include_header=False))
    else:
        with tmp.open("wb") as fh:
            for row in table.to_pylist():
                fh.write(orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    os.replace(tmp, path)


class _Checkpoint:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[str, list[int]] = json.loads(path.read_text()) if path.exists() else {}

    def has(self, shard: str, chunk: int) -> bool:
        return chunk in self.done.get(shard, [])

    def record(self, shard: str, chunk: int) -> None:
        self.done.setdefault(shard, []).append(chunk)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.done))
        os.replace(tmp, self.path)


class _Writer:
    """Writes parts on a thread of its own, one chunk behind the model (Arrow and file writes release
    the GIL), and records each chunk in the checkpoint once its files are in place. At most two
    chunks wait, so memory stays bounded."""

    def __init__(self, checkpoint: _Checkpoint) -> None:
        self._checkpoint = checkpoint
        self._queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue(maxsize=2)
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="batch-writer", daemon=True)

    def __enter__(self) -> _Writer:
        self._thread.start()
        return self

    def submit(self, *job: Any) -> None:
        if self._failure is not None:
            raise self._failure
        self._queue.put(job)

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            if self._failure is not None:
                continue
            table, part, kind, rejected, errors_file, shard, index = job
            try:
                _write(table, part, kind)
                _write(rejected, errors_file, "jsonl")
                self._checkpoint.record(shard, index)
            except BaseException as exc:  # surfaced to the caller on its next submit or at the end
                self._failure = exc

    def __exit__(self, *exc: object) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._failure is not None and exc[0] is None:
            raise self._failure


def run_batch(
    model: LoadedModel,
    source: Path,
    output: Path,
    *,
    chunk_rows: int = 50_000,
    id_columns: list[str] | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> BatchSummary:
    """Predicts every row of `source` into `output` (a folder); resumable with the same arguments."""
    output.mkdir(parents=True, exist_ok=True)
    parts, errors = output / "_parts", output / "_errors"
    parts.mkdir(exist_ok=True)
    errors.mkdir(exist_ok=True)
    checkpoint = _Checkpoint(output / "_checkpoint.json")
    summary = BatchSummary()
    files = shards(source)
    with _Writer(checkpoint) as writer:
        for shard in files:
            counts = summary.shards.setdefault(shard.name, {"rows": 0, "predicted": 0, "rejected": 0})
            for index, chunk, batch in _prefetched(model, shard, chunk_rows, checkpoint):
                if batch is None:
                    summary.skipped_chunks += 1
                else:
                    table, rejected = _predict_chunk(
                        model, chunk, batch, id_columns, first_row=index * chunk_rows, shard=shard.name
                    )
                    writer.submit(
                        table,
                        parts / f"{shard.name}.{index:06d}{_EXTENSIONS[FORMATS[shard.suffix]]}",
                        FORMATS[shard.suffix],
                        rejected,
                        errors / f"{shard.name}.{index:06d}.jsonl",
                        shard.name,
                        index,
                    )
                counts["rows"] += chunk.num_rows
                if on_chunk is not None:
                    on_chunk(chunk.num_rows)
    for shard in files:
        header = [*(c for c in (id_columns or []) if c in _columns(shard)), "prediction", "label", "confidence"]
        summary.outputs.append(str(_join(shard, parts, output, FORMATS[shard.suffix], header)))
    _join_errors(errors, output / "errors.jsonl")
    rejected_per_shard: dict[str, int] = {}
    for line in (output / "errors.jsonl").read_bytes().splitlines():
        name = orjson.loads(line)["shard"]
        rejected_per_shard[name] = rejected_per_shard.get(name, 0) + 1
    for name, counts in summary.shards.items():
        counts["predicted"] = _rows_in(output / _output_name(name, FORMATS[Path(name).suffix]))
        counts["rejected"] = rejected_per_shard.get(name, 0)
        summary.rows += counts["rows"]
        summary.predicted += counts["predicted"]
        summary.rejected += counts["rejected"]
    (output / "_summary.json").write_text(json.dumps({**summary.__dict__}, indent=2))
    return summary


def _prefetched(
    model: LoadedModel, shard: Path, chunk_rows: int, checkpoint: _Checkpoint
) -> Iterator[tuple[int, pa.Table, ColumnBatch | None]]:
    """Chunks read and validated on a thread of their own, one ahead of the model (Arrow and numpy
    release the GIL), so reading and checking overlap with inference. None: the chunk is done."""
    ready: queue.Queue[tuple[int, pa.Table, ColumnBatch | None] | BaseException | None] = queue.Queue(maxsize=2)

    def produce() -> None:
        try:
            for index, chunk in enumerate(_chunks(shard, chunk_rows)):
                done = checkpoint.has(shard.name, index)
                ready.put((index, chunk, None if done else validate_columns(model.pipeline, chunk)))
        except BaseException as exc:  # handed to the consumer, raised there
            ready.put(exc)
        else:
            ready.put(None)

    thread = threading.Thread(target=produce, name="batch-reader", daemon=True)
    thread.start()
    while (item := ready.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        yield item
    thread.join()


def _predict_chunk(
    model: LoadedModel,
    chunk: pa.Table,
    batch: ColumnBatch,
    id_columns: list[str] | None,
    *,
    first_row: int,
    shard: str,
) -> tuple[pa.Table, pa.Table]:
    answers: dict[str, Any] = (
        model.postprocess_columns(model.infer(batch.matrix))
        if batch.matrix.shape[0]
        else {"prediction": np.zeros(0), "label": None, "confidence": np.zeros(0)}
    )
    kept = chunk.filter(pa.array(batch.valid))
    ids = [c for c in (id_columns or []) if c in chunk.column_names]
    table = pa.table(
        {
            **{c: kept.column(c) for c in ids},
            "prediction": _array(answers["prediction"], kept.num_rows),
            "label": _array(answers["label"], kept.num_rows),
            "confidence": _array(answers["confidence"], kept.num_rows),
        }
    )
    rejected = pa.table(
        {
            "shard": [shard] * len(batch.errors),
            "row": [first_row + e.row for e in batch.errors],
            "field": [e.field for e in batch.errors],
            "reason": [e.reason for e in batch.errors],
        }
    )
    return table, rejected


def _array(values: Any, n: int) -> pa.Array:
    """An Arrow column from the model's answers: a numpy array, (codes, names) for labels, or None."""
    if values is None:
        return pa.nulls(n, type=pa.string())
    if isinstance(values, tuple):
        codes, names = values
        return pa.DictionaryArray.from_arrays(pa.array(codes, type=pa.int32()), pa.array(names, type=pa.string()))
    return pa.array(values)


def _output_name(shard: str, kind: str) -> str:
    return f"{Path(shard).stem}.predictions{_EXTENSIONS[kind]}"


def _join(shard: Path, parts: Path, output: Path, kind: str, header: list[str]) -> Path:
    target = output / _output_name(shard.name, kind)
    pieces = sorted(parts.glob(f"{shard.name}.*{_EXTENSIONS[kind]}"))
    tmp = target.with_name(target.name + ".tmp")
    if kind == "parquet":
        # A Parquet dataset: the parts moved into one folder (read as one table by pyarrow, Spark,
        # Athena, pandas), rather than every row read and written once more. Named by chunk, so a
        # second join (a resumed or repeated run) adds or replaces parts and never loses one.
        target.mkdir(exist_ok=True)
        for piece in pieces:
            chunk = piece.name.removeprefix(f"{shard.name}.").removesuffix(".parquet")
            os.replace(piece, target / f"part-{chunk}.parquet")
        return target
    else:
        with tmp.open("wb") as out:
            if kind == "csv":
                out.write((",".join(f'"{name}"' for name in header) + "\n").encode())
            for piece in pieces:
                with piece.open("rb") as fh:
                    shutil.copyfileobj(fh, out)
    os.replace(tmp, target)
    return target


def _join_errors(errors: Path, target: Path) -> None:
    with target.open("wb") as out:
        for piece in sorted(errors.glob("*.jsonl")):
            out.write(piece.read_bytes())


def _rows_in(path: Path) -> int:
    if path.is_dir():
        return sum(int(pq.ParquetFile(p).metadata.num_rows) for p in path.glob("*.parquet"))
    lines = sum(1 for line in path.read_bytes().splitlines() if line.strip())
    return lines - 1 if path.suffix == ".csv" else lines


def _columns(path: Path) -> list[str]:
    first = next(_batches(path), None)
    return [] if first is None else list(first.schema.names)
