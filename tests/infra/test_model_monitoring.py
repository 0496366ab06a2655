"""Monitoring's AWS resources as synthesized for dev (cdk.json): the parts must agree with each other
and with the rules AWS documents that neither moto nor the workflow test enforces.

- Firehose (Developer Guide, "Convert input data format" and "Dynamic partitioning"): record format
  conversion reads its schema from a Glue table and needs a buffer of at least 64 MiB, as does
  dynamic partitioning; a prefix with `partitionKeyFromQuery` needs dynamic partitioning and its
  metadata extraction query for that key, and an error prefix with `!{firehose:error-output-type}`.
  The OpenX JSON SerDe lowercases keys unless `CaseInsensitive` is false: the map keys are feature
  names, which keep their case.
- Athena partition projection (User Guide, "Partition projection"): the table's
  storage.location.template must be where Firehose writes each partition, and the `hour` format
  Firehose's timestamp format.
- The schedule's input must be what the workflow reads ($.models, $.window, $.scheduled_time).
"""

from __future__ import annotations

import json
import re
from typing import Any

import jq
import pytest

from infra.config import CONTEXT_KEY, load_environments
from infra.constructs.images import MONITOR, image_tag
from sagegate.monitoring import schema
from sagegate.workflows.definitions import DEFINITIONS
from tests.aws_rules.template import Deployed, synthesized
from tests.infra.test_images import CONTEXT


@pytest.fixture(scope="module")
def dev() -> Deployed:
    return synthesized("dev")


def _only(deployed: Deployed, kind: str) -> tuple[str, dict[str, Any]]:
    (logical,) = deployed.of_type(kind)
    return logical, deployed.properties(logical)


def test_the_log_table_is_the_schema_firehose_converts_to_and_athena_projects(dev: Deployed) -> None:
    _, table = _only(dev, "AWS::Glue::Table")
    _, stream = _only(dev, "AWS::KinesisFirehose::DeliveryStream")
    s3 = stream["ExtendedS3DestinationConfiguration"]
    inputs = table["TableInput"]
    descriptor = inputs["StorageDescriptor"]
    assert [(c["Name"], c["Type"]) for c in descriptor["Columns"]] == schema.COLUMNS
    assert [(c["Name"], c["Type"]) for c in inputs["PartitionKeys"]] == schema.PARTITION_KEYS
    assert descriptor["SerdeInfo"]["SerializationLibrary"].endswith("ParquetHiveSerDe")
    bucket = s3["BucketARN"].removeprefix("arn:aws:s3:::")
    assert descriptor["Location"] == f"s3://{bucket}/predictions/"
    # Firehose converts with this table's schema, to Parquet, keys keeping their case.
    conversion = s3["DataFormatConversionConfiguration"]
    assert conversion["Enabled"] is True
    assert conversion["SchemaConfiguration"]["DatabaseName"] == table["DatabaseName"]
    assert conversion["SchemaConfiguration"]["TableName"] == inputs["Name"]
    serde = conversion["InputFormatConfiguration"]["Deserializer"]["OpenXJsonSerDe"]
    assert serde["CaseInsensitive"] is False
    # a Hive keyword is no column name: the line's "timestamp" key is read into `ts` (Firehose's
    # OpenXJsonSerDe reference: ColumnToJsonKeyMappings)
    assert serde["ColumnToJsonKeyMappings"] == schema.JSON_KEYS == {"ts": "timestamp"}
    assert "timestamp" not in {name for name, _ in schema.COLUMNS}
    assert "ParquetSerDe" in conversion["OutputFormatConfiguration"]["Serializer"]
    assert s3["BufferingHints"]["SizeInMBs"] >= 64
    # Partitions: the model from each line (feedback without one: _unknown), the hour of arrival.
    assert s3["DynamicPartitioningConfiguration"]["Enabled"] is True
    assert s3["Prefix"] == schema.data_prefix() and "!{firehose:error-output-type}" in s3["ErrorOutputPrefix"]
    (processor,) = s3["ProcessingConfiguration"]["Processors"]
    parameters = {p["ParameterName"]: p["ParameterValue"] for p in processor["Parameters"]}
    assert processor["Type"] == "MetadataExtraction"
    query = jq.compile(parameters["MetadataExtractionQuery"])  # the JQ Firehose runs on each line
    assert parameters["JsonParsingEngine"] == "JQ-1.6"
    for line, partition in (
        ({"model": "fraud", "version": "1"}, "fraud"),
        ({"type": "feedback", "model": None}, schema.UNKNOWN_MODEL),
        ({"type": "feedback", "prediction_id": "p1"}, schema.UNKNOWN_MODEL),
    ):
        assert query.input_value(line).first() == {"model": partition}
    keys = re.findall(r"!\{partitionKeyFromQuery:([a-z_]+)\}", s3["Prefix"])
    assert keys == ["model"]
    # Athena finds each partition where Firehose wrote it.
    projected = inputs["Parameters"]
    template = projected["storage.location.template"]
    written = s3["Prefix"].replace("!{partitionKeyFromQuery:model}", "${model}")
    written = written.replace("!{timestamp:yyyy-MM-dd-HH}", "${hour}")
    assert template == f"s3://{bucket}/{written}"
    assert "!{timestamp:" + projected["projection.hour.format"] + "}" in s3["Prefix"]
    assert projected["projection.model.type"] == "injected" and projected["projection.enabled"] == "true"


def test_the_schedule_starts_the_workflow_with_what_it_reads(dev: Deployed) -> None:
    _, schedule = _only(dev, "AWS::Scheduler::Schedule")
    machine = dev.logical_id("AWS::StepFunctions::StateMachine", StateMachineName="sagegate-dev-monitor")
    target = schedule["Target"]
    assert target["Arn"] == dev.ref(machine)
    payload = json.loads(target["Input"])
    models = [m.name for m in load_environments(CONTEXT[CONTEXT_KEY])["dev"].models]
    # no window: each version is judged over its manifest's monitoring.window
    assert payload == {"models": models, "window": None, "scheduled_time": "<aws.scheduler.scheduled-time>"}
    definition = (DEFINITIONS / "monitor.asl.json").read_text()
    assert all(f'"$.{key}"' in definition for key in payload)
    assert re.fullmatch(r"cron\((\S+ ){5}\S+\)", schedule["ScheduleExpression"])  # six fields
    role = next(r for r in dev.of_type("AWS::IAM::Role") if dev.get_att(r, "Arn") == target["RoleArn"])
    trust = dev.properties(role)["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "scheduler.amazonaws.com"}]
    starts = [s for s in dev.role_statements(role) if "states:StartExecution" in s["Action"]]
    assert [s["Resource"] for s in starts] == [dev.ref(machine)]
    # the input is encrypted with the environment's key, which Scheduler decrypts as this role
    (key,) = [dev.get_att(k, "Arn") for k in dev.of_type("AWS::KMS::Key")]
    assert schedule["KmsKeyArn"] == key
    decrypts = [s for s in dev.role_statements(role) if "kms:Decrypt" in s["Action"]]
    assert [s["Resource"] for s in decrypts] == [key]


def test_the_workgroup_keeps_results_encrypted_in_the_log_bucket_and_stops_runaway_queries(dev: Deployed) -> None:
    _, workgroup = _only(dev, "AWS::Athena::WorkGroup")
    _, stream = _only(dev, "AWS::KinesisFirehose::DeliveryStream")
    bucket = stream["ExtendedS3DestinationConfiguration"]["BucketARN"].removeprefix("arn:aws:s3:::")
    config = workgroup["WorkGroupConfiguration"]
    assert config["EnforceWorkGroupConfiguration"] is True  # a query cannot send its results elsewhere
    results = config["ResultConfiguration"]
    assert results["OutputLocation"] == f"s3://{bucket}/athena-results/"
    (key,) = [dev.get_att(k, "Arn") for k in dev.of_type("AWS::KMS::Key")]
    assert results["EncryptionConfiguration"] == {"EncryptionOption": "SSE_KMS", "KmsKey": key}
    assert 0 < config["BytesScannedCutoffPerQuery"] <= 100 * 1024**3


def test_the_monitor_lambda_runs_the_built_image_once_it_is_pushed(dev: Deployed) -> None:
    function = dev.logical_id("AWS::Lambda::Function", FunctionName="sagegate-dev-monitor")
    props = dev.properties(function)
    assert props["PackageType"] == "Image"
    assert props["Code"]["ImageUri"].endswith(f"/sagegate-dev-monitor:{image_tag(MONITOR)}")
    build = next(
        k for k in dev.of_type("Custom::SagegateImage") if dev.properties(k)["RepositoryName"].endswith("-monitor")
    )
    assert build in dev.resources[function].get("DependsOn", [])
    dockerfile = (MONITOR.dockerfile and (DEFINITIONS.parent / MONITOR.dockerfile).read_text()) or ""
    assert '".[monitor-lambda]"' in dockerfile and 'CMD ["handler.handler"]' in dockerfile


def test_the_logs_delivery_is_alarmed(dev: Deployed) -> None:
    """A line Firehose cannot convert to the table's schema goes to errors/ and the checks would see
    no traffic; a late delivery makes the hour's checks miss lines. Both alarm to the topic (metric
    names: Firehose developer guide, "Monitoring with CloudWatch metrics": format conversion and
    delivery to Amazon S3)."""
    _, stream = _only(dev, "AWS::KinesisFirehose::DeliveryStream")
    (topic,) = dev.of_type("AWS::SNS::Topic")
    alarms = {
        p["MetricName"]: p
        for a in dev.of_type("AWS::CloudWatch::Alarm")
        if (p := dev.properties(a)).get("Namespace") == "AWS/Firehose"
    }
    assert set(alarms) == {"FailedConversion.Records", "DeliveryToS3.DataFreshness"}
    for alarm in alarms.values():
        assert alarm["Dimensions"] == [{"Name": "DeliveryStreamName", "Value": stream["DeliveryStreamName"]}]
        assert alarm["AlarmActions"] == [dev.ref(topic)]
    assert alarms["FailedConversion.Records"]["Threshold"] == 1
    assert alarms["DeliveryToS3.DataFreshness"]["Threshold"] <= 900  # before the next hour's run at :10
