"""The batch inference engine: stream records in, predictions out, resumable after a kill.

Input is a file or a folder of files (each file a shard) in CSV, JSON Lines or Parquet, read by
pyarrow in fixed-size chunks, so memory stays flat in the input's size. Each chunk is validated
column by column, run through the model package with the server's own preprocessing, and written
as one part file (atomically: a temporary name, then a rename), after which the checkpoint records
the chunk. A run that is killed and started again skips the recorded chunks and rewrites any part
that was renamed but not yet recorded (the same rows give the same bytes), so every row ends up
in the output exactly once. At the end each shard's parts are joined: CSV and JSON Lines into one file, Parquet into one
dataset folder (the parts renamed, not rewritten).

Each format is read by what the manifest says, never by guessing: CSV columns are read as text and
parsed by the features' rules (type inference from the first block would turn "02134" into 2134 and
abort on a bad cell further down); JSON Lines records are parsed one by one and checked as the server
checks JSON; Parquet columns carry their own types (`sagegate.batch.columns`). A bad cell or line is
its row's error in `errors.jsonl`, anywhere in the file, and the run goes on. Counts come from the
chunks as they are written (and the checkpoint, for chunks done by an earlier run), never from
reading the output back.
"""

from __future__ import annotations

import csv
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
import pyarrow.parquet as pq

from sagegate.batch.columns import ColumnBatch, RowError, unreadable, validate_columns, validate_records
from sagegate.packaging.archive import sha256_file
from sagegate.server.model import LoadedModel

__all__ = ["FORMATS", "BatchSummary", "RunConflict", "count_rows", "run_batch", "shards"]

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
_EXTENSIONS = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet"}
_BLOCK = 16 << 20  # bytes per read when counting lines
_CSV_BLOCK = 2 << 20  # bytes per CSV block: Arrow reads several blocks ahead, so this bounds memory


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


def _csv_names(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
        return next(csv.reader(fh), [])


def _batches(path: Path) -> Iterator[pa.RecordBatch]:
    kind = FORMATS[path.suffix]
    if kind == "parquet":
        yield from pq.ParquetFile(path).iter_batches(batch_size=65_536)
    elif kind == "csv":
        # Every column as bytes: the features' rules parse the text (an invalid UTF-8 cell is a row error).
        convert = pa_csv.ConvertOptions(
            column_types=dict.fromkeys(_csv_names(path), pa.binary()),
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
            null_values=[],
        )
        parse = pa_csv.ParseOptions(newlines_in_values=True)
        read = pa_csv.ReadOptions(block_size=_CSV_BLOCK)
        yield from pa_csv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert)
    else:
        raise ValueError("JSON Lines are read by _records")


@dataclass
class _Chunk:
    """One fixed-size chunk of a shard: its rows' id columns and, unless it is done, its validation."""

    rows: int
    ids: pa.Table
    batch: ColumnBatch | None


def _table_chunks(path: Path, rows: int) -> Iterator[pa.Table]:
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


def _decoded(table: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """CSV bytes as text; rows with a cell that is not UTF-8 are marked (and their cells emptied)."""
    bad = np.zeros(table.num_rows, dtype=bool)
    columns = []
    for column in table.columns:
        try:
            columns.append(column.cast(pa.string()))
        except pa.ArrowInvalid:  # rare: find the cells, one by one
            texts = []
            for i, value in enumerate(column.to_pylist()):
                try:
                    texts.append(value.decode("utf-8"))
                except UnicodeDecodeError:
                    bad[i] = True
                    texts.append("")
            columns.append(pa.chunked_array([pa.array(texts, type=pa.string())]))
    return pa.Table.from_arrays(columns, names=table.column_names), bad


def _record(line: bytes) -> Any:
    """One JSON Lines record, parsed as the server parses a body (orjson, then the standard library
    for what orjson refuses, such as numbers beyond a double)."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            return unreadable(f"not valid JSON: {exc}")
    if isinstance(record, dict) and set(record) == {"features"}:
        record = record["features"]
    return record


def _records(path: Path, rows: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    with path.open("rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            chunk.append(_record(line))
            if len(chunk) == rows:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def _ids_of(records: list[Any], id_columns: list[str]) -> pa.Table:
    columns = {}
    for name in id_columns:
        values = [r.get(name) if isinstance(r, dict) else None for r in records]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # ids of mixed types: kept as text
            columns[name] = pa.array([None if v is None else str(v) for v in values], type=pa.string())
    return pa.table(columns) if columns else pa.table({"_": pa.nulls(len(records))}).drop(["_"])


def _chunks(
    model: LoadedModel, path: Path, rows: int, id_columns: list[str], done: Callable[[int], bool]
) -> Iterator[_Chunk]:
    kind = FORMATS[path.suffix]
    if kind == "jsonl":
        for index, records in enumerate(_records(path, rows)):
            batch = None if done(index) else validate_records(model.pipeline, records)
            yield _Chunk(len(records), _ids_of(records, id_columns), batch)
        return
    for index, read in enumerate(_table_chunks(path, rows)):
        table, unreadable_rows = _decoded(read) if kind == "csv" else (read, None)
        ids = table.select([c for c in id_columns if c in table.column_names])
        if done(index):
            yield _Chunk(table.num_rows, ids, None)
            continue
        batch = validate_columns(model.pipeline, table, text=kind == "csv")
        if unreadable_rows is not None and unreadable_rows.any():
            batch = _without(model, table, batch, unreadable_rows)
        yield _Chunk(table.num_rows, ids, batch)


def _unanswered(batch: ColumnBatch, unanswered: np.ndarray) -> ColumnBatch:
    """The rows the model answered with a value that is not a number, set aside as errors."""
    rows = np.flatnonzero(batch.valid)[unanswered]
    valid = batch.valid.copy()
    valid[rows] = False
    errors = [*batch.errors, *(RowError(int(r), None, "the model's answer is not a number") for r in rows)]
    return ColumnBatch(batch.select(~unanswered), valid, sorted(errors, key=lambda e: e.row))


def _without(model: LoadedModel, table: pa.Table, batch: ColumnBatch, bad: np.ndarray) -> ColumnBatch:
    """The chunk's validation with the rows that had a cell which is not UTF-8 set aside."""
    keep = batch.valid & ~bad
    errors = [e for e in batch.errors if not bad[e.row]]
    errors += [RowError(int(i), None, "a cell is not valid UTF-8 text") for i in np.flatnonzero(bad)]
    return ColumnBatch(batch.select(~bad[batch.valid]), keep, sorted(errors, key=lambda e: e.row))


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


class RunConflict(ValueError):
    """The output folder holds (part of) a run over another model, input or chunking."""


def _fingerprint(
    model: LoadedModel,
    files: list[Path],
    chunk_rows: int,
    ids: list[str],
    earlier: dict[str, Any] | None,
    *,
    explain: bool = False,
) -> dict[str, Any]:
    """What a run's chunks depend on: the model's bytes, each shard's bytes, the chunking and the id
    columns. A shard's sha256 is reused from the earlier run while its size and mtime are unchanged
    (hashing a large input again on every resume would cost seconds); a copied or downloaded input
    (a new mtime, as on a spot job's restart) is hashed again and compared by content."""
    known = (earlier or {}).get("shards", {})
    shards: dict[str, Any] = {}
    for path in files:
        stat = path.stat()
        before = known.get(path.name, {})
        same = before.get("size") == stat.st_size and before.get("mtime_ns") == stat.st_mtime_ns
        digest = before["sha256"] if same and "sha256" in before else sha256_file(path)
        shards[path.name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    manifest = model.manifest
    return {
        "model": {"name": manifest.name, "version": manifest.version, "sha256": manifest.sha256},
        "chunk_rows": chunk_rows,
        "id_columns": ids,
        "explain": explain,
        "shards": shards,
    }


def _differences(earlier: dict[str, Any], now: dict[str, Any]) -> list[str]:
    said: list[str] = []
    if earlier.get("model") != now["model"]:
        was = earlier.get("model", {})
        said.append(
            f"the model was {was.get('name')} v{was.get('version')} (sha256 {str(was.get('sha256'))[:12]}), now "
            f"{now['model']['name']} v{now['model']['version']} (sha256 {now['model']['sha256'][:12]})"
        )
    for name in ("chunk_rows", "id_columns", "explain"):
        if earlier.get(name, False if name == "explain" else None) != now[name]:
            said.append(f"{name.replace('_', ' ')} was {earlier.get(name)}, now {now[name]}")
    before, after = earlier.get("shards", {}), now["shards"]
    for name in sorted(set(before) | set(after)):
        if name not in after:
            said.append(f"input {name} is gone")
        elif name not in before:
            said.append(f"input {name} is new")
        elif before[name].get("sha256") != after[name]["sha256"]:
            said.append(f"input {name} changed")
    return said


class _Checkpoint:
    """The chunks done, per shard, with how many rows each predicted and rejected, and the
    fingerprint of the run they belong to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        loaded = json.loads(path.read_text()) if path.exists() else {}
        self.run: dict[str, Any] | None = loaded.get("run")
        self.done: dict[str, dict[str, list[int]]] = loaded.get("done", {})

    def bind(self, run: dict[str, Any]) -> None:
        """Continue only the same run: the same model, inputs, chunking and id columns."""
        if self.done:
            said = _differences(self.run, run) if self.run is not None else ["it has no fingerprint"]
            if said:
                raise RunConflict(
                    f"{self.path.parent} holds a run that cannot be continued ({'; '.join(said)}): "
                    "give another --output, or --restart to predict everything again"
                )
        self.run = run
        self._save()

    def has(self, shard: str, chunk: int) -> bool:
        return str(chunk) in self.done.get(shard, {})

    def counts(self, shard: str, chunk: int) -> tuple[int, int]:
        predicted, rejected = self.done[shard][str(chunk)]
        return predicted, rejected

    def record(self, shard: str, chunk: int, predicted: int, rejected: int) -> None:
        self.done.setdefault(shard, {})[str(chunk)] = [predicted, rejected]
        self._save()

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"run": self.run, "done": self.done}))
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
                self._checkpoint.record(shard, index, table.num_rows, rejected.num_rows)
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
    restart: bool = False,
    explain: bool = False,
) -> BatchSummary:
    """Predicts every row of `source` into `output` (a folder); resumable with the same model, input
    and arguments (anything else raises RunConflict, unless `restart` starts over). With `explain`
    each row gets its base value and a `contribution.<feature>` column per feature (the model's
    explainer: sagegate.explain)."""
    if explain and model.explainer is None:
        from sagegate.explain import NoExplainer

        raise NoExplainer(f"model {model.manifest.name} v{model.manifest.version} has no explainer")
    files = shards(source)
    ids = list(id_columns or [])
    output.mkdir(parents=True, exist_ok=True)
    parts, errors = output / "_parts", output / "_errors"
    if restart:
        shutil.rmtree(parts, ignore_errors=True)
        shutil.rmtree(errors, ignore_errors=True)
        (output / "_checkpoint.json").unlink(missing_ok=True)
    checkpoint = _Checkpoint(output / "_checkpoint.json")
    checkpoint.bind(_fingerprint(model, files, chunk_rows, ids, checkpoint.run, explain=explain))
    parts.mkdir(exist_ok=True)
    errors.mkdir(exist_ok=True)
    summary = BatchSummary()
    with _Writer(checkpoint) as writer:
        for shard in files:
            counts = summary.shards.setdefault(shard.name, {"rows": 0, "predicted": 0, "rejected": 0})
            for index, chunk in _prefetched(model, shard, chunk_rows, ids, checkpoint):
                if chunk.batch is None:
                    summary.skipped_chunks += 1
                    predicted, rejected_rows = checkpoint.counts(shard.name, index)
                else:
                    table, rejected = _predict_chunk(
                        model, chunk, first_row=index * chunk_rows, shard=shard.name, explain=explain
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
                    predicted, rejected_rows = table.num_rows, rejected.num_rows
                counts["rows"] += chunk.rows
                counts["predicted"] += predicted
                counts["rejected"] += rejected_rows
                if on_chunk is not None:
                    on_chunk(chunk.rows)
    for shard in files:
        header = [*_id_columns_of(shard, ids), "prediction", "label", "confidence"]
        summary.outputs.append(str(_join(shard, parts, output, FORMATS[shard.suffix], header)))
    _join_errors(errors, output / "errors.jsonl")
    for counts in summary.shards.values():
        summary.rows += counts["rows"]
        summary.predicted += counts["predicted"]
        summary.rejected += counts["rejected"]
    (output / "_summary.json").write_text(json.dumps({**summary.__dict__}, indent=2))
    return summary


def _prefetched(
    model: LoadedModel, shard: Path, chunk_rows: int, id_columns: list[str], checkpoint: _Checkpoint
) -> Iterator[tuple[int, _Chunk]]:
    """Chunks read and validated on a thread of their own, one ahead of the model (Arrow and numpy
    release the GIL), so reading and checking overlap with inference. A chunk done by an earlier
    run is read (to keep the rows in step) but not validated."""
    ready: queue.Queue[tuple[int, _Chunk] | BaseException | None] = queue.Queue(maxsize=2)

    def produce() -> None:
        try:
            chunks = _chunks(model, shard, chunk_rows, id_columns, lambda i: checkpoint.has(shard.name, i))
            for index, chunk in enumerate(chunks):
                ready.put((index, chunk))
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
    model: LoadedModel, chunk: _Chunk, *, first_row: int, shard: str, explain: bool = False
) -> tuple[pa.Table, pa.Table]:
    batch = chunk.batch
    assert batch is not None
    out = model.infer(batch.inputs) if batch.size else None
    inputs = batch.inputs
    if out is not None and (unanswered := model.unanswered(out)).any():
        inputs = batch.select(~unanswered)
        batch = _unanswered(batch, unanswered)
        out = out[~unanswered]
    if out is None or not len(out):
        # no row answered: the columns of no answers, typed as every other part's (a dataset's parts
        # must share one schema: a multiclass prediction is text, a label a dictionary)
        out = np.zeros((0, len(model.manifest.outputs.labels or [None])), dtype=np.float32)
    answers: dict[str, Any] = model.postprocess_columns(out)
    kept = chunk.ids.filter(pa.array(batch.valid))
    n = int(batch.valid.sum())
    table = pa.table(
        {
            **{c: kept.column(c) for c in kept.column_names},
            "prediction": _array(answers["prediction"], n),
            "label": _array(answers["label"], n),
            "confidence": _array(answers["confidence"], n),
            **(_contributions(model, inputs, out, n) if explain else {}),
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


def _contributions(model: LoadedModel, inputs: dict[str, np.ndarray], out: np.ndarray, n: int) -> dict[str, pa.Array]:
    """base_value and contribution.<feature> columns: each row's explanation, for the output its
    explanation names (a binary model's positive class, a multiclass row's predicted class)."""
    names = [f.name for f in model.manifest.features]
    if n == 0:
        return {
            "base_value": pa.array([], pa.float64()),
            **{f"contribution.{f}": pa.array([], pa.float64()) for f in names},
        }
    explained = model.explainer.explain(inputs, out)
    return {
        "base_value": pa.array([e["base_value"] for e in explained], pa.float64()),
        **{f"contribution.{f}": pa.array([e["contributions"][f] for e in explained], pa.float64()) for f in names},
    }


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
            with piece.open("rb") as fh:
                shutil.copyfileobj(fh, out)


def _id_columns_of(shard: Path, id_columns: list[str]) -> list[str]:
    """The id columns a shard's output carries: those its header has (CSV, Parquet), or all asked
    for (JSON Lines, where each record may or may not have them)."""
    kind = FORMATS[shard.suffix]
    if kind == "jsonl":
        return id_columns
    present = _csv_names(shard) if kind == "csv" else pq.ParquetFile(shard).schema_arrow.names
    return [c for c in id_columns if c in present]
