"""The monitoring workflow's logic (stepfunctions/monitor.asl.json): per model, which queries Athena
runs next, and, once it has run them, the checks judged, published and drawn.

The workflow calls `handle` with one model's state and waits for the queries it answers, then calls it
again once they have finished, until it answers `done`. It starts the queries itself (Athena's
StartQueryExecution) and answers only their execution ids, which the state machine waits for. Two
rounds:
- `start`: the versions of the model with predictions in the window (one query);
- `versions`: for each of those versions that is registered with a baseline, every query its checks
  need (sagegate.monitoring.monitor.version_queries with the Athena dialect and the Glue table);
- `checks`: the results read from Athena, each version judged by the same code as `sagegate monitor`
  (judge_version), each statistic published to CloudWatch (namespace Sagegate/Monitoring, per model,
  version and feature), one `FailedChecks` datum per model and kind of check (what the stack's alarms
  watch), and the HTML report of every version to S3.

Neither SQL nor rows pass through the state machine: only execution ids; the results are read here
with GetQueryResults (paginated).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sagegate.monitoring.checks import CheckResult

__all__ = [
    "CHECK_KINDS",
    "FAILED_METRIC",
    "NAMESPACE",
    "RUN_FAILED",
    "MonitorSettings",
    "handle",
    "report_key",
    "window_end",
]

NAMESPACE = "Sagegate/Monitoring"
FAILED_METRIC = "FailedChecks"  # per Model and Check: what the alarms watch
CHECK_KINDS = ("data_quality", "feature_drift", "prediction_drift", "accuracy", "bias")
RUN_FAILED = "run"  # the FailedChecks kind of a model whose run failed (a query, the registry, the judge)
_PUT_BATCH = 500  # PutMetricData takes up to 1000 values per call; half keeps every call far below 1 MB


def _nothing_judged(notes: list[str]) -> dict[str, Any]:
    """The last step of a model with nothing to judge (no traffic, not registered, its run failed)."""
    return {
        "phase": "done",
        "done": True,
        "queries": [],
        "versions": [],
        "notes": notes,
        "report": None,
        "checks": 0,
        "failed": 0,
        "failures": [],
    }


class MonitorWorkflowError(Exception):
    """A step the workflow cannot take: a phase it does not know."""


@dataclass(frozen=True)
class MonitorSettings:
    database: str
    table: str
    reports_bucket: str
    workgroup: str = "primary"
    reports_prefix: str = "reports"

    @property
    def source(self) -> str:
        from sagegate.monitoring.sql import quoted

        return f"{quoted(self.database)}.{quoted(self.table)}"


def window_end(scheduled: str) -> datetime:
    """The window ends at the top of the hour the schedule fired in (the hour before is complete:
    Firehose delivers within its buffering interval, and the queries read the next hour's partition)."""
    at = datetime.fromisoformat(scheduled.replace("Z", "+00:00"))
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def report_key(settings: MonitorSettings, model: str, end: datetime) -> str:
    return f"{settings.reports_prefix}/{model}/{end:%Y-%m-%dT%H%MZ}.html"


def handle(event: dict[str, Any], clients: Any, settings: MonitorSettings) -> dict[str, Any]:
    """One step of one model: `event` is the model's state ({model, window, scheduled_time, step,
    executions}); answers the next step ({phase, queries, ...}, done when finished)."""
    step = event.get("step") or {"phase": "start"}
    phase = step["phase"]
    if phase == "start":
        return _start(event, clients, settings)
    if phase == "versions":
        return _plan_versions(event, step, clients, settings)
    if phase == "checks":
        return _judge(event, step, clients, settings)
    if phase == "failed":
        return _failed(event, clients)
    raise MonitorWorkflowError(f"unknown phase {phase!r}")


def _windows(event: dict[str, Any]) -> tuple[datetime, str]:
    return window_end(event["scheduled_time"]), event.get("window") or "1h"


def _start(event: dict[str, Any], clients: Any, settings: MonitorSettings) -> dict[str, Any]:
    from sagegate.monitoring.monitor import window_ending
    from sagegate.monitoring.sql import ATHENA, versions_sql

    model = event["model"]
    if not clients.registry.versions(model):  # configured, not registered yet: nothing to monitor
        return _nothing_judged([f"{model}: not in the registry yet"])
    end, window = _windows(event)
    sql = versions_sql(ATHENA, settings.source, model, window_ending(end, window))
    queries = _started(clients.athena, settings, {"versions": sql})
    return {"phase": "versions", "done": False, "queries": queries, "notes": []}


def _plan_versions(
    event: dict[str, Any], step: dict[str, Any], clients: Any, settings: MonitorSettings
) -> dict[str, Any]:
    from sagegate.monitoring.monitor import version_queries, versions_from_rows
    from sagegate.monitoring.sql import ATHENA

    model = event["model"]
    end, window = _windows(event)
    (execution,) = event["executions"]
    versions = versions_from_rows(_results(clients.athena, execution["id"]))
    notes: list[str] = list(step.get("notes", []))
    named: dict[str, str] = {}
    planned: list[str] = []
    registered = {v.version: v for v in clients.registry.versions(model)}
    for version, n in versions.items():
        found = registered.get(version)
        if found is None:
            notes.append(f"{model} v{version}: {n} predictions, but the registry has no such version")
            continue
        baseline = _baseline(clients.registry, found)
        if baseline is None:
            notes.append(f"{model} v{version} has no baseline: package it with --training-data to monitor it")
            continue
        checked, accuracy_window = _version_windows(event, end, found.manifest)
        checks = version_queries(
            ATHENA, settings.source, found.manifest, baseline, window=checked, accuracy_window=accuracy_window
        )
        named |= {f"{version}/{name}": sql for name, sql in checks.items()}
        planned.append(version)
    if not planned:
        notes.append(f"{model}: no version with a baseline had predictions in the {window} to {end:%Y-%m-%d %H:%M}Z")
        return _nothing_judged(notes)
    queries = _started(clients.athena, settings, named)
    return {"phase": "checks", "done": False, "queries": queries, "notes": notes, "versions": planned}


def _started(athena: Any, settings: MonitorSettings, named: dict[str, str]) -> list[dict[str, str]]:
    """Each query started in the workgroup: only its name and execution id go back to the state
    machine (which waits for them), never the SQL (a wide model's would pass 256 KB of state)."""
    started = []
    for name, sql in named.items():
        answer = athena.start_query_execution(
            QueryString=sql,
            WorkGroup=settings.workgroup,
            QueryExecutionContext={"Catalog": "AwsDataCatalog", "Database": settings.database},
        )
        started.append({"name": name, "id": answer["QueryExecutionId"]})
    return started


def _judge(event: dict[str, Any], step: dict[str, Any], clients: Any, settings: MonitorSettings) -> dict[str, Any]:
    from sagegate.monitoring.command import MonitorRun
    from sagegate.monitoring.monitor import judge_version
    from sagegate.monitoring.report import render_report

    model = event["model"]
    end, _ = _windows(event)
    results: dict[str, dict[str, list[tuple[Any, ...]]]] = {}
    for execution in event["executions"]:
        version, _, name = execution["name"].partition("/")
        results.setdefault(version, {})[name] = _results(clients.athena, execution["id"])
    registered = {v.version: v for v in clients.registry.versions(model)}
    run = MonitorRun(model, [], list(step.get("notes", [])))
    for version in step["versions"]:
        found = registered[version]
        baseline = _baseline(clients.registry, found)
        assert baseline is not None  # planned only with one
        window, accuracy_window = _version_windows(event, end, found.manifest)
        run.reports.append(
            judge_version(
                found.manifest, baseline, results.get(version, {}), window=window, accuracy_window=accuracy_window
            )
        )
    _publish(clients.cloudwatch, model, run, end)
    key = report_key(settings, model, end)
    clients.s3.put_object(
        Bucket=settings.reports_bucket,
        Key=key,
        Body=render_report(run).encode(),
        ContentType="text/html; charset=utf-8",
    )
    failed = [r for report in run.reports for r in report.failed]
    return {
        "phase": "done",
        "done": True,
        "queries": [],
        "versions": step["versions"],
        "notes": run.notes,
        "report": f"s3://{settings.reports_bucket}/{key}",
        "checks": sum(len(r.results) for r in run.reports),
        "failed": len(failed),
        "failures": [_summary(r) for r in failed][:50],  # the state stays small; the report has them all
    }


def _failed(event: dict[str, Any], clients: Any) -> dict[str, Any]:
    """A model whose run failed: one FailedChecks of kind `run` (its alarm), the error as its note."""
    model, error = event["model"], event.get("error") or {}
    clients.cloudwatch.put_metric_data(
        Namespace=NAMESPACE, MetricData=[_failed_datum(model, RUN_FAILED, 1, window_end(event["scheduled_time"]))]
    )
    cause = f"{error.get('Error', 'failed')}: {str(error.get('Cause', ''))[:500]}"
    return _nothing_judged([cause])


def _summary(result: CheckResult) -> dict[str, Any]:
    return {
        "check": result.check,
        "feature": result.feature,
        "statistic": result.statistic,
        "value": result.value,
        "threshold": result.threshold,
        "window": result.window,
    }


def _version_windows(event: dict[str, Any], end: datetime, manifest: Any) -> tuple[Any, Any]:
    """A version's window (the run's, else its manifest's) and its accuracy window, ending at `end`."""
    from sagegate.monitoring.monitor import window_ending

    monitoring = manifest.monitoring
    assert monitoring is not None  # a version with a baseline has monitoring settings
    window = window_ending(end, event.get("window") or monitoring.window)
    return window, window_ending(end, monitoring.accuracy_window)


def _baseline(registry: Any, found: Any) -> Any:
    from sagegate.monitoring.baseline import Baseline

    body = registry.baseline_of(found)
    return None if body is None else Baseline.model_validate_json(body)


def _results(athena: Any, execution_id: str) -> list[tuple[Any, ...]]:
    """A finished query's rows, typed (every page: GetQueryResults answers 1000 rows at most)."""
    from sagegate.monitoring.athena import athena_rows

    rows: list[dict[str, Any]] = []
    types: list[str] = []
    request: dict[str, Any] = {"QueryExecutionId": execution_id, "MaxResults": 1000}
    while True:
        page = athena.get_query_results(**request)
        result = page["ResultSet"]
        if not types:
            types = [c["Type"] for c in result["ResultSetMetadata"]["ColumnInfo"]]
        rows += result["Rows"]
        if not page.get("NextToken"):
            return athena_rows(types, rows)
        request["NextToken"] = page["NextToken"]


def _metric_data(model: str, run: Any, end: datetime) -> Iterator[dict[str, Any]]:
    """The FailedChecks counts first, then every finite statistic (CloudWatch refuses NaN and
    infinities: a constant training feature that moved has an infinite mean shift, which still
    counts as a failed check)."""
    for kind in CHECK_KINDS:
        yield _failed_datum(
            model, kind, sum(1 for report in run.reports for r in report.failed if r.check == kind), end
        )
    for report in run.reports:
        for result in report.results:
            if result.value is None or not math.isfinite(result.value):
                continue
            yield {
                "MetricName": result.statistic,
                "Dimensions": [
                    {"Name": "Model", "Value": model},
                    {"Name": "Version", "Value": report.version},
                    {"Name": "Feature", "Value": result.feature or "-"},
                ],
                "Timestamp": end,
                "Value": float(result.value),
            }


def _failed_datum(model: str, kind: str, count: int, end: datetime) -> dict[str, Any]:
    """One FailedChecks value: what the stack's alarms watch, per model and kind of check."""
    return {
        "MetricName": FAILED_METRIC,
        "Dimensions": [{"Name": "Model", "Value": model}, {"Name": "Check", "Value": kind}],
        "Timestamp": end,
        "Value": float(count),
        "Unit": "Count",
    }


def _publish(cloudwatch: Any, model: str, run: Any, end: datetime) -> None:
    data = list(_metric_data(model, run, end))
    for chunk in _chunks(data, _PUT_BATCH):
        cloudwatch.put_metric_data(Namespace=NAMESPACE, MetricData=chunk)


def _chunks(items: Sequence[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
