"""Where every answered prediction is recorded: Kinesis Data Firehose in AWS, a JSON Lines file locally.

Records are buffered during an invocation and written together at its end (`flush`), not with a
round trip per prediction. Three kinds of line share the log, told apart by `type` (sagegate.monitoring
reads them): a prediction (no `type`) with its validated features, prediction, score, version,
variant, cache hit, degraded flag and time; `"feedback"`, the truth for a prediction_id
(POST /v1/feedback); `"rejected"`, a request refused for its features, with the reason per field.

Firehose's lines are typed for the Glue table that converts them to Parquet
(sagegate.monitoring.schema): one table for every model, so `features` and `rejected` are maps of
text and `outcome` is text; `firehose_record` writes those values as text itself, leaving Firehose's
conversion nothing to coerce.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import orjson

from sagegate.keys import logged_hash
from sagegate.manifest import ModelManifest, Task

__all__ = ["FirehoseLog", "JsonLinesLog", "LoggedFeatures", "NullLog", "PredictionLogProtocol", "firehose_record"]

log = logging.getLogger("sagegate.gateway")

_FIREHOSE_BATCH = 500  # PutRecordBatch: at most 500 records ...
_FIREHOSE_BYTES = 4 * 1024 * 1024  # ... and 4 MiB per call


class PredictionLogProtocol(Protocol):
    def record(self, entry: dict[str, Any]) -> None: ...

    def flush(self) -> None: ...


class LoggedFeatures:
    """What the log keeps of one model version's validated features: each feature's checked value,
    null where neither the request nor the feature store gave it (the default the model then got is
    not what was sent: the missing rate is measured on what was sent), `sensitive: drop` features
    left out and `sensitive: hash` ones hashed (sagegate.keys.logged_hash)."""

    def __init__(self, manifest: ModelManifest) -> None:
        self.model = manifest.name
        self._kept = [(f.name, f.sensitive == "hash") for f in manifest.features if f.sensitive != "drop"]
        task = manifest.outputs.task
        # the score monitoring histograms: the positive-class probability, the top-class one, the value
        self.score_field = "confidence" if task is Task.MULTICLASS else "prediction"

    def __call__(self, clean: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
        logged: dict[str, Any] = {}
        for name, hashed in self._kept:
            value = clean.get(name) if given.get(name) is not None else None
            logged[name] = logged_hash(self.model, name, value) if hashed and value is not None else value
        return logged


class NullLog:
    def record(self, entry: dict[str, Any]) -> None:
        return None

    def flush(self) -> None:
        return None


def json_line(entry: dict[str, Any]) -> bytes:
    return orjson.dumps(entry) + b"\n"


def _text(value: Any, *, truth: str = "true", false: str = "false") -> str | None:
    """A value as the text a map<string,string> holds: numbers as their shortest repr ("12.5",
    "3.0"), booleans as `truth`/`false`, text as it is, null as null."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return truth if value else false
    if isinstance(value, int | float):
        return repr(value)
    return orjson.dumps(value).decode()


def firehose_record(entry: dict[str, Any]) -> bytes:
    """One log line as Firehose's Glue table reads it: the values of `features` and `rejected`, and
    the `outcome`, as text; the rest as the JSON Lines log writes it.

    A feature's boolean is logged as the request gave it (the validator checks it, the log keeps it);
    only a bool feature can hold one, and it is written as the number the model got ("1.0"/"0.0"),
    which is also what the local engine reads from `true`. An outcome's boolean is "true"/"false"."""
    line = dict(entry)
    for name in ("features", "rejected"):
        if isinstance(values := line.get(name), Mapping):
            line[name] = {key: _text(value, truth="1.0", false="0.0") for key, value in values.items()}
    if "outcome" in line:
        line["outcome"] = _text(line["outcome"])
    return json_line(line)


class _Buffered:
    def __init__(self, encode: Callable[[dict[str, Any]], bytes] = json_line) -> None:
        self._encode = encode
        self._pending: list[bytes] = []
        self._lock = threading.Lock()

    def record(self, entry: dict[str, Any]) -> None:
        line = self._encode(entry)
        with self._lock:
            self._pending.append(line)

    def _take(self) -> list[bytes]:
        with self._lock:
            pending, self._pending = self._pending, []
        return pending


class JsonLinesLog(_Buffered):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def flush(self) -> None:
        pending = self._take()
        if pending:
            with self.path.open("ab") as fh:
                fh.write(b"".join(pending))


class FirehoseLog(_Buffered):
    """PutRecordBatch in chunks within Firehose's limits; failed records are retried once, then logged."""

    def __init__(self, client: Any, stream: str) -> None:
        super().__init__(firehose_record)
        self._client = client
        self.stream = stream

    def flush(self) -> None:
        pending = self._take()
        chunk: list[bytes] = []
        size = 0
        for line in pending:
            if chunk and (len(chunk) == _FIREHOSE_BATCH or size + len(line) > _FIREHOSE_BYTES):
                self._put(chunk)
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        if chunk:
            self._put(chunk)

    def _put(self, lines: list[bytes], retry: bool = True) -> None:
        try:
            answer = self._client.put_record_batch(
                DeliveryStreamName=self.stream, Records=[{"Data": line} for line in lines]
            )
        except Exception as exc:  # the prediction was answered already; losing its log line is logged
            log.error("prediction log: %d records not delivered to %s: %s", len(lines), self.stream, exc)
            return
        if answer.get("FailedPutCount"):
            failed = [
                line for line, result in zip(lines, answer["RequestResponses"], strict=True) if result.get("ErrorCode")
            ]
            if retry:
                self._put(failed, retry=False)
            else:
                log.error("prediction log: %d records not delivered to %s", len(failed), self.stream)
