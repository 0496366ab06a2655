"""The monitoring workflow (stepfunctions/monitor.asl.json) executed by moto's Step Functions in the
dev account as cdk.json synthesizes it, started with the input of the synthesized EventBridge
Scheduler schedule: the fraud model registered with its baseline through the real registry code, an
hour of its traffic (clean, then drifted: the demo's amounts x3 and merchant mix) in the Glue table's
Parquet as Firehose partitions it, every AWS call checked against the synthesized roles and
botocore's models (the fixture's teardown).

Stand-in: moto's Athena answers every query with nothing. Here StartQueryExecution also runs the
query's text on DuckDB over that Parquet (tests/athena_on_duckdb.py: transpiled from Trino by
sqlglot) and keeps the answer as the execution's results, which GetQueryResults then returns.

What this cannot prove: Athena's own engine and Firehose's conversion (see tests/athena_on_duckdb.py);
Lambda's packaging of the container image (containers/monitor); that Scheduler fires on time and
fills <aws.scheduler.scheduled-time> as documented; the permissions Athena uses as the caller are
checked against the role here (`test_the_monitor_lambda_may_do_what_athena_does_as_it`), not by an
AWS evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from moto.athena.exceptions import AthenaClientError
from moto.athena.models import AthenaBackend, QueryResults
from moto.cloudwatch.models import cloudwatch_backends

from sagegate.local.examples import build_fraud_package
from sagegate.monitoring.baseline import Baseline
from sagegate.monitoring.engine import DuckDBEngine
from sagegate.monitoring.monitor import monitor_version, version_queries, window_ending
from sagegate.monitoring.sql import ATHENA
from sagegate.packaging import BuiltPackage
from sagegate.registry.sagemaker import SageMakerRegistry
from sagegate.workflows import monitor
from sagegate.workflows.monitor import CHECK_KINDS, FAILED_METRIC, NAMESPACE, RUN_FAILED
from tests.athena_on_duckdb import AthenaOnDuckDB, firehose_parquet, fraud_log
from tests.aws_rules.iam import Request, evaluate
from tests.workflows.conftest import run_execution

END = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # the window's end: the top of the hour the schedule fired in
FIRED = "2026-12-01T12:10:00Z"  # the schedule's <aws.scheduler.scheduled-time>


@pytest.fixture(scope="module")
def fraud(tmp_path_factory: pytest.TempPathFactory) -> BuiltPackage:
    return build_fraud_package(tmp_path_factory.mktemp("fraud") / "pkg", "logreg", rows=8000, seed=3)


def _schedule_input(env: SimpleNamespace) -> dict[str, Any]:
    (logical,) = env.deployed.of_type("AWS::Scheduler::Schedule")
    target = env.deployed.properties(logical)["Target"]
    assert target["Arn"] == env.machines[env.monitor_machine]  # the schedule starts the monitoring workflow
    text = str(target["Input"]).replace("<aws.scheduler.scheduled-time>", FIRED)
    payload: dict[str, Any] = json.loads(text)
    return payload


class _Queries:
    """What the workflow asked Athena, answered by DuckDB over the log's Parquet."""

    def __init__(self) -> None:
        self.engine: AthenaOnDuckDB | None = None
        self.asked: list[str] = []

    def answer(self, backend: AthenaBackend, execution_id: str, sql: str) -> None:
        self.asked.append(sql)
        assert self.engine is not None
        answer = self.engine.results(sql)
        names = [cell["VarCharValue"] for cell in answer["rows"][0]["Data"]]
        columns = [{"Name": n, "Label": n, "Type": t} for n, t in zip(names, answer["types"], strict=True)]
        backend.query_results[execution_id] = QueryResults(rows=answer["rows"], column_info=columns)


@pytest.fixture
def monitored(
    first_world: SimpleNamespace, fraud: BuiltPackage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SimpleNamespace]:
    env = first_world
    queries = _Queries()
    start = AthenaBackend.start_query_execution

    def start_and_run(self: AthenaBackend, query: str, *args: Any, **kwargs: Any) -> str:
        execution_id: str = start(self, query, *args, **kwargs)
        queries.answer(self, execution_id, query)
        return execution_id

    monkeypatch.setattr(AthenaBackend, "start_query_execution", start_and_run)
    registry = SageMakerRegistry(env.sm, env.s3, bucket=env.artifacts, image_uri="inference:1")
    with env.recorder.off():  # the user's registration and approval, before the hour
        version, _ = registry.register(fraud.path)
        registry.approve("fraud", version.version, by="ci")
    env.version = version
    env.queries = queries
    env.root = tmp_path
    yield env


def _log(env: SimpleNamespace, lines: list[dict[str, Any]]) -> Path:
    """The hour's log as Firehose delivers it (the workflow's) and as the local stack writes it."""
    firehose_parquet(lines, env.root / "s3")
    variables = env.monitor_env
    env.queries.engine = AthenaOnDuckDB(
        env.root / "s3", database=variables["SAGEGATE_MONITOR_DATABASE"], table=variables["SAGEGATE_MONITOR_TABLE"]
    )
    local = env.root / "predictions.jsonl"
    local.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    return local


def _published(env: SimpleNamespace) -> dict[tuple[str, tuple[tuple[str, str], ...]], list[float]]:
    backend = cloudwatch_backends[env.deployed.account][env.deployed.region]
    found: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = {}
    for datum in backend.metric_data:
        if datum.namespace != NAMESPACE:
            continue
        dims = tuple(sorted((d.name, d.value) for d in datum.dimensions))
        found.setdefault((datum.name, dims), []).append(float(datum.value))
    return found


def test_a_drifted_hour_is_judged_as_sagegate_monitor_judges_it_and_published(
    monitored: SimpleNamespace, fraud: BuiltPackage
) -> None:
    env = monitored
    manifest = env.version.manifest
    local_log = _log(env, fraud_log(fraud, manifest, END))

    run = run_execution(env, env.monitor_machine, "hourly", _schedule_input(env), timeout=300)

    assert run["status"] == "SUCCEEDED", run["error"]
    (outcome,) = run["output"]["models"]
    assert outcome["model"] == "fraud" and outcome["failed"] > 0
    # The same checks on the local engine over the same lines (sagegate monitor's code path).
    baseline = Baseline.read(fraud.baseline) if fraud.baseline else None
    assert baseline is not None
    settings = manifest.monitoring
    assert settings is not None
    engine = DuckDBEngine(local_log)
    try:
        local = monitor_version(
            engine,
            manifest,
            baseline,
            window=window_ending(END, "1h"),
            accuracy_window=window_ending(END, settings.accuracy_window),
        )
    finally:
        engine.close()
    assert outcome["checks"] == len(local.results)
    assert outcome["failed"] == len(local.failed)
    assert {"amount", "merchant_category"} <= {f["feature"] for f in outcome["failures"]}
    # Every statistic published once, with the local engine's value; a FailedChecks count per kind.
    published = _published(env)
    for result in local.results:
        if result.value is None:
            continue
        dims = (("Feature", result.feature), ("Model", "fraud"), ("Version", manifest.version))
        (value,) = published[(result.statistic, tuple(sorted(dims)))]
        assert value == pytest.approx(result.value, rel=1e-9, abs=1e-12)
    for kind in CHECK_KINDS:
        (count,) = published[(FAILED_METRIC, (("Check", kind), ("Model", "fraud")))]
        assert count == sum(1 for r in local.failed if r.check == kind)
    # Each monitoring alarm of the stack watches a metric the workflow publishes.
    alarms = [
        env.deployed.properties(a)
        for a in env.deployed.of_type("AWS::CloudWatch::Alarm")
        if env.deployed.properties(a).get("Namespace") == NAMESPACE
    ]
    assert len(alarms) == len(CHECK_KINDS) + 1  # and one for a failed run (its test below)
    for alarm in alarms:
        dims = tuple(sorted((d["Name"], d["Value"]) for d in alarm["Dimensions"]))
        assert (alarm["MetricName"], dims) in published or ("Check", RUN_FAILED) in dims
    # The report: one page with a plot per drifted feature.
    bucket = env.monitor_env["SAGEGATE_MONITOR_REPORTS_BUCKET"]
    assert outcome["report"] == f"s3://{bucket}/reports/fraud/2026-12-01T1200Z.html"
    with env.recorder.off():
        page = env.s3.get_object(Bucket=bucket, Key="reports/fraud/2026-12-01T1200Z.html")["Body"].read().decode()
    for feature in local.drifted:
        assert f"drifted feature: {feature}" in page
    # Athena was asked in two rounds (the versions, then every check of v1) on the schedule's window.
    checks = version_queries(
        ATHENA,
        '"x"."y"',
        manifest,
        baseline,
        window=window_ending(END, "1h"),
        accuracy_window=window_ending(END, settings.accuracy_window),
    )
    assert len(env.queries.asked) == 1 + len(checks)
    assert all("sagegate_dev_monitoring" in q and "model IN ('fraud'" in q for q in env.queries.asked)


def test_an_hour_without_traffic_publishes_nothing_and_says_so(monitored: SimpleNamespace, fraud: BuiltPackage) -> None:
    env = monitored
    _log(env, [x for x in fraud_log(fraud, env.version.manifest, END - timedelta(days=3)) if x.get("type") is None])

    run = run_execution(env, env.monitor_machine, "quiet", _schedule_input(env), timeout=120)

    assert run["status"] == "SUCCEEDED", run["error"]
    (outcome,) = run["output"]["models"]
    assert outcome["report"] is None and outcome["checks"] == 0
    assert any("no version with a baseline had predictions" in n for n in outcome["notes"])
    assert _published(env) == {}
    assert len(env.queries.asked) == 1  # the versions only


def test_the_monitor_lambda_may_do_what_athena_does_as_it(first_world: SimpleNamespace) -> None:
    """Athena reads the table and the data and writes the results with the caller's permissions
    (Athena user guide, "Identity and access management in Athena": the Glue Data Catalog, the
    table's S3 location, the query result location, and the KMS key of each): moto makes none of
    those calls, so each is evaluated here against the synthesized policy of the monitor Lambda's role,
    which starts the queries."""
    env = first_world
    deployed = env.deployed
    statements = deployed.role_statements(env.monitor_function_role)
    variables = env.monitor_env
    database, table = variables["SAGEGATE_MONITOR_DATABASE"], variables["SAGEGATE_MONITOR_TABLE"]
    bucket = variables["SAGEGATE_MONITOR_REPORTS_BUCKET"]
    glue = f"arn:aws:glue:{deployed.region}:{deployed.account}"
    (key,) = [deployed.get_att(k, "Arn") for k in deployed.of_type("AWS::KMS::Key")]
    requests = [
        *(Request(f"glue:{a}", f"{glue}:catalog") for a in ("GetDatabase", "GetTable")),
        Request("glue:GetDatabase", f"{glue}:database/{database}"),
        Request("glue:GetTable", f"{glue}:database/{database}"),
        Request("glue:GetTable", f"{glue}:table/{database}/{table}"),
        Request(
            "s3:ListBucket", f"arn:aws:s3:::{bucket}", (("s3:prefix", "predictions/model=fraud/hour=2026-12-01-11/"),)
        ),
        Request("s3:GetObject", f"arn:aws:s3:::{bucket}/predictions/model=fraud/hour=2026-12-01-11/part-0.parquet"),
        Request("s3:GetBucketLocation", f"arn:aws:s3:::{bucket}"),
        Request("s3:PutObject", f"arn:aws:s3:::{bucket}/athena-results/1234.csv"),
        Request("s3:GetObject", f"arn:aws:s3:::{bucket}/athena-results/1234.csv"),
        Request("s3:ListMultipartUploadParts", f"arn:aws:s3:::{bucket}/athena-results/1234.csv"),
        Request("s3:AbortMultipartUpload", f"arn:aws:s3:::{bucket}/athena-results/1234.csv"),
        Request("kms:Decrypt", key),
        Request("kms:GenerateDataKey", key),
    ]
    refused = [str(r) for r in requests if evaluate(r, statements) != "allowed"]
    assert refused == []
    # and nothing beyond the log: another prefix of the bucket is not the queries'
    assert evaluate(Request("s3:GetObject", f"arn:aws:s3:::{bucket}/reports/fraud/x.html"), statements) != "allowed"


def test_a_model_whose_queries_fail_is_reported_failed_and_the_others_go_on(
    monitored: SimpleNamespace, fraud: BuiltPackage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Athena refusing a query (here: every query of the checks) ends that model's run with one
    FailedChecks of kind `run` (its alarm), not the whole execution."""
    env = monitored
    _log(env, fraud_log(fraud, env.version.manifest, END))
    answer = env.queries.answer

    def refuse_checks(backend: AthenaBackend, execution_id: str, sql: str) -> None:
        if "COUNT(*) AS n FROM" in sql and "GROUP BY version" in sql:
            return answer(backend, execution_id, sql)  # the versions query answers
        raise AthenaClientError("InvalidRequestException", "line 1:1: mismatched input")

    monkeypatch.setattr(env.queries, "answer", refuse_checks)
    payload = {**_schedule_input(env), "models": ["fraud", "churn"]}  # churn: configured, not registered

    run = run_execution(env, env.monitor_machine, "refused", payload, timeout=300)

    assert run["status"] == "SUCCEEDED", run["error"]
    fraud_run, churn_run = run["output"]["models"]
    assert fraud_run["report"] is None and "StartQueryExecution" in fraud_run["notes"][0]  # the Lambda's error
    assert churn_run["notes"] == ["churn: not in the registry yet"]
    published = _published(env)
    assert published[(FAILED_METRIC, (("Check", RUN_FAILED), ("Model", "fraud")))] == [1.0]
    assert not any(name != FAILED_METRIC for name, _ in published)  # no statistic of a failed run


def test_no_statistic_cloudwatch_would_refuse_is_published() -> None:
    """CloudWatch refuses NaN and infinities (MetricDatum.Value): a constant training feature that
    moved has an infinite mean shift. It is a failed check, not a datum that fails the whole call."""
    from sagegate.monitoring.checks import CheckResult

    infinite = CheckResult("feature_drift", "hour", "mean_shift_sigma", float("inf"), 3.0, "1h", "fail")
    finite = CheckResult("feature_drift", "hour", "psi", 0.4, 0.2, "1h", "fail")
    run = SimpleNamespace(reports=[SimpleNamespace(version="1", results=[infinite, finite], failed=[infinite, finite])])
    data = list(monitor._metric_data("fraud", run, END))
    assert [d["MetricName"] for d in data if d["MetricName"] != FAILED_METRIC] == ["psi"]
    (drift,) = [d for d in data if {"Name": "Check", "Value": "feature_drift"} in d["Dimensions"]]
    assert drift["Value"] == 2.0
