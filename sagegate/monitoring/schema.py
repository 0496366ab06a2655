"""The prediction log as Firehose writes it in AWS: Parquet, converted by Firehose from the gateway's
JSON lines through the Glue table defined here, partitioned by model and hour.

One table serves every model, so a line's feature values cannot be typed columns (each model has
its own features): `features` and `rejected` are maps of text, and the Athena dialect reads a
numeric feature as `TRY_CAST(element_at(features, name) AS DOUBLE)`. The gateway writes the values
of those maps as text itself (sagegate.gateway.prediction_log.firehose_record), so that Firehose's
conversion has nothing to coerce.

The partitions are Firehose's: `model` from the line (dynamic partitioning, `_unknown` for a
feedback line that names no model) and `hour` (`yyyy-MM-dd-HH`, UTC), Firehose's !{timestamp}: the
arrival of the oldest record of the S3 object a line was delivered in, so within an hour either side
of the hour the line was logged in (queries read that margin). Athena finds them by partition
projection (no crawler, no MSCK REPAIR): `model` injected (every query names its model), `hour` a
date range.
"""

from __future__ import annotations

__all__ = [
    "COLUMNS",
    "HOUR_FORMAT",
    "JSON_KEYS",
    "PARTITION_KEYS",
    "PREFIX",
    "TIME_COLUMN",
    "UNKNOWN_MODEL",
    "data_prefix",
    "error_prefix",
    "projection",
]

# (name, Glue/Hive type): the columns the checks read, and what a person querying the log wants.
COLUMNS: list[tuple[str, str]] = [
    ("prediction_id", "string"),
    ("version", "string"),
    ("variant", "string"),
    ("type", "string"),  # NULL: a prediction; 'feedback'; 'rejected'
    ("features", "map<string,string>"),
    ("rejected", "map<string,string>"),
    ("label", "string"),
    ("confidence", "double"),
    ("score", "double"),
    ("outcome", "string"),
    ("latency_ms", "double"),
    ("cache_hit", "boolean"),
    ("degraded", "boolean"),
    ("ts", "string"),  # the line's "timestamp" (ISO 8601, UTC): `timestamp` is a Hive keyword
]
TIME_COLUMN = "ts"
# Glue columns read from JSON keys of another name (Firehose's OpenX SerDe ColumnToJsonKeyMappings)
JSON_KEYS = {TIME_COLUMN: "timestamp"}
PARTITION_KEYS: list[tuple[str, str]] = [("model", "string"), ("hour", "string")]
HOUR_FORMAT = "%Y-%m-%d-%H"  # the `hour` partition (Firehose's !{timestamp:yyyy-MM-dd-HH})
UNKNOWN_MODEL = "_unknown"  # the `model` partition of a feedback line that names no model
PREFIX = "predictions"


def data_prefix() -> str:
    """Firehose's S3 prefix for delivered Parquet (its dynamic-partitioning expressions)."""
    return f"{PREFIX}/model=!{{partitionKeyFromQuery:model}}/hour=!{{timestamp:yyyy-MM-dd-HH}}/"


def error_prefix() -> str:
    return "errors/!{firehose:error-output-type}/hour=!{timestamp:yyyy-MM-dd-HH}/"


def projection(bucket: str, since: str = "2025-01-01-00") -> dict[str, str]:
    """The table's partition projection parameters, over `s3://bucket/predictions/`."""
    return {
        "projection.enabled": "true",
        "projection.model.type": "injected",
        "projection.hour.type": "date",
        "projection.hour.format": "yyyy-MM-dd-HH",
        "projection.hour.range": f"{since},NOW",
        "projection.hour.interval": "1",
        "projection.hour.interval.unit": "HOURS",
        "storage.location.template": f"s3://{bucket}/{PREFIX}/model=${{model}}/hour=${{hour}}/",
    }
