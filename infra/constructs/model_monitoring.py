"""Model monitoring in AWS (issue 16's AWS half): the prediction log's Glue table (Parquet, partitioned
by model and hour: sagegate.monitoring.schema), an Athena workgroup, the monitor Lambda (a container
image: containers/monitor), the workflow that runs the checks' queries (stepfunctions/monitor.asl.json),
the EventBridge Scheduler schedule that starts it every hour, and per model one alarm per kind of
check on the workflow's `FailedChecks` metric, to the environment's alarm topic."""

from __future__ import annotations

import json

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_athena as athena
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.constructs.access import list_objects, read_objects, write_objects
from infra.constructs.functions import image_function
from infra.constructs.state_machines import state_machine
from infra.nag import acknowledge, arn, attribute, policy_holder, skip_check, wildcard_resource
from sagegate.monitoring import schema
from sagegate.workflows.monitor import CHECK_KINDS, FAILED_METRIC, NAMESPACE, RUN_FAILED

ATHENA_RESULTS = "athena-results/"  # in the prediction-log bucket: the workgroup's query results
REPORTS = "reports/"  # in the prediction-log bucket: one HTML page per model and window
SCHEDULE = "cron(10 * * * ? *)"  # ten past every hour: the hour before, delivered (Firehose buffers 2 min)
BYTES_SCANNED_CUTOFF = 50 * 1024**3  # per query: a runaway query stops here, not at the bill


def database_name(prefix: str) -> str:
    return prefix.replace("-", "_") + "_monitoring"  # Glue and Athena: lower case, digits, underscores


class LogTable(Construct):
    """The Glue database and table of the prediction log, which Firehose converts to (its schema)
    and Athena reads (partition projection over `s3://bucket/predictions/`)."""

    def __init__(self, scope: Construct, id: str, *, prefix: str, bucket: s3.IBucket) -> None:
        super().__init__(scope, id)
        account = Stack.of(self).account
        self.database_name = database_name(prefix)
        self.table_name = "predictions"
        self.database = glue.CfnDatabase(
            self,
            "Database",
            catalog_id=account,
            database_input=glue.CfnDatabase.DatabaseInputProperty(
                name=self.database_name, description=f"{prefix}: the gateway's prediction log"
            ),
        )
        self.table = glue.CfnTable(
            self,
            "Table",
            catalog_id=account,
            database_name=self.database_name,
            table_input=glue.CfnTable.TableInputProperty(
                name=self.table_name,
                description="the gateway's predictions, feedback and refused requests (sagegate.monitoring.schema)",
                table_type="EXTERNAL_TABLE",
                parameters={"classification": "parquet", **schema.projection(bucket.bucket_name)},
                partition_keys=[glue.CfnTable.ColumnProperty(name=n, type=t) for n, t in schema.PARTITION_KEYS],
                storage_descriptor=glue.CfnTable.StorageDescriptorProperty(
                    columns=[glue.CfnTable.ColumnProperty(name=n, type=t) for n, t in schema.COLUMNS],
                    location=f"s3://{bucket.bucket_name}/{schema.PREFIX}/",
                    input_format="org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
                    output_format="org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
                    serde_info=glue.CfnTable.SerdeInfoProperty(
                        serialization_library="org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
                    ),
                ),
            ),
        )
        self.table.node.add_dependency(self.database)
        stack = Stack.of(self)
        self.catalog_arn = stack.format_arn(service="glue", resource="catalog", arn_format=ArnFormat.NO_RESOURCE_NAME)
        self.database_arn = stack.format_arn(service="glue", resource="database", resource_name=self.database_name)
        self.table_arn = stack.format_arn(
            service="glue", resource="table", resource_name=f"{self.database_name}/{self.table_name}"
        )


class ModelMonitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        prefix: str,
        key: kms.IKey,
        topic: sns.ITopic,
        table: LogTable,
        logs_bucket: s3.IBucket,
        registry_bucket: s3.IBucket,
        registry_prefix: str,
        repository: ecr.IRepository,
        image_tag: str,
        image_build: Construct | None,
        models: list[str],
        log_retention: logs.RetentionDays,
        removal: RemovalPolicy,
        registry_account: str | None = None,
        stream_name: str | None = None,
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        self.workgroup = athena.CfnWorkGroup(
            self,
            "WorkGroup",
            name=f"{prefix}-monitoring",
            description=f"{prefix}: the monitoring checks' queries over the prediction log",
            state="ENABLED",
            recursive_delete_option=removal == RemovalPolicy.DESTROY,
            work_group_configuration=athena.CfnWorkGroup.WorkGroupConfigurationProperty(
                enforce_work_group_configuration=True,
                publish_cloud_watch_metrics_enabled=True,
                bytes_scanned_cutoff_per_query=BYTES_SCANNED_CUTOFF,
                engine_version=athena.CfnWorkGroup.EngineVersionProperty(
                    selected_engine_version="Athena engine version 3"
                ),
                result_configuration=athena.CfnWorkGroup.ResultConfigurationProperty(
                    output_location=logs_bucket.s3_url_for_object(ATHENA_RESULTS),
                    encryption_configuration=athena.CfnWorkGroup.EncryptionConfigurationProperty(
                        encryption_option="SSE_KMS", kms_key=key.key_arn
                    ),
                ),
            ),
        )
        self.workgroup_arn = stack.format_arn(service="athena", resource="workgroup", resource_name=self.workgroup.name)

        self.function = image_function(
            self,
            "MonitorLogic",
            function_name=f"{prefix}-monitor",
            code=lambda_.DockerImageCode.from_ecr(repository, tag_or_digest=image_tag),
            log_retention=log_retention,
            removal=removal,
            memory_size=3008,  # fairlearn, pandas and plotly: the import alone wants the CPU that comes with it
            timeout=Duration.minutes(5),
            environment={
                "SAGEGATE_MONITOR_DATABASE": table.database_name,
                "SAGEGATE_MONITOR_TABLE": table.table_name,
                "SAGEGATE_MONITOR_REPORTS_BUCKET": logs_bucket.bucket_name,
                "SAGEGATE_MONITOR_WORKGROUP": f"{prefix}-monitoring",
                "SAGEGATE_REGISTRY_BUCKET": registry_bucket.bucket_name,
                **(
                    {"SAGEGATE_REGISTRY_ACCOUNT": registry_account, "SAGEGATE_REGISTRY_MODELS": ",".join(models)}
                    if registry_account
                    else {}
                ),
                "POWERTOOLS_SERVICE_NAME": "sagegate-monitor",
            },
        )
        if image_build is not None:
            self.function.node.add_dependency(image_build)  # the image is pushed before the function names it
        logic = self.function
        skip_check(
            logic,
            "CKV_AWS_116",
            "the monitoring workflow is its only caller and invokes it synchronously (lambda:invoke, request and"
            " response), retrying its errors in the state machine: no event can be lost",
        )
        skip_check(
            logic,
            "CKV_AWS_117",
            "it calls AWS APIs only (Athena, S3, SageMaker's registry, CloudWatch) and reaches nothing in the VPC;"
            " in it, it would need an interface endpoint per service for no isolation gained",
        )
        # The registry: versions and manifests (SageMaker), manifests and baselines (S3).
        packages = stack.format_arn(
            service="sagemaker", resource="model-package", resource_name="*", account=registry_account
        )
        groups = stack.format_arn(
            service="sagemaker", resource="model-package-group", resource_name="*", account=registry_account
        )
        logic.add_to_role_policy(
            iam.PolicyStatement(actions=["sagemaker:DescribeModelPackage"], resources=[packages, groups])
        )
        logic.add_to_role_policy(
            iam.PolicyStatement(
                actions=["sagemaker:ListModelPackages", "sagemaker:ListModelPackageGroups"], resources=["*"]
            )
        )
        acknowledge(
            policy_holder(logic),
            wildcard_resource("*"),
            "sagemaker:ListModelPackages and ListModelPackageGroups have no resource scope",
        )
        for resource in ("model-package/*", "model-package-group/*"):
            acknowledge(
                policy_holder(logic),
                wildcard_resource(arn(self, "sagemaker", resource, account=registry_account)),
                "the registry's versions (ListModelPackages, DescribeModelPackage) of the models in cdk.json;"
                " their groups are the model names, their packages numbered by SageMaker",
            )
        read_objects(logic, registry_bucket, registry_prefix, why="the versions' manifests and baselines")
        write_objects(logic, logs_bucket, REPORTS, why="the monitoring reports")
        logic.add_to_role_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": NAMESPACE}},
            )
        )
        acknowledge(
            policy_holder(logic),
            wildcard_resource("*"),
            "cloudwatch:PutMetricData has no resource scope: limited to the Sagegate/Monitoring namespace by condition",
        )

        self.machine = state_machine(
            self,
            "monitor",
            prefix=prefix,
            substitutions={"MonitorFunctionArn": logic.function_arn},
            log_retention=log_retention,
            removal=removal,
        )
        self.machine.node.add_dependency(self.workgroup)
        logic.grant_invoke(self.machine)
        acknowledge(
            self.machine.role,
            wildcard_resource(attribute(logic, ":*")),
            "CDK's grant_invoke covers the versions of the workflow's own Lambda",
        )
        # the Lambda starts the queries and reads their results; the state machine waits for them
        self._grant_queries(logic.role, table, logs_bucket)
        self.machine.role.add_to_principal_policy(
            iam.PolicyStatement(actions=["athena:GetQueryExecution"], resources=[self.workgroup_arn])
        )
        self.schedule = self._schedule(prefix, models, key)
        self.alarms = self._alarms(prefix, models, topic, stream_name)  # stream: the log's, its delivery alarmed

    def _grant_queries(self, role: iam.IRole | None, table: LogTable, bucket: s3.IBucket) -> None:
        """What Athena needs of the caller to run a query on the table and read its results (Athena's
        guide: the Glue table, the data's objects, the results location, both through the key)."""
        assert role is not None
        for actions_, resources in (
            (
                [
                    "athena:StartQueryExecution",
                    "athena:GetQueryExecution",
                    "athena:GetQueryResults",
                    "athena:StopQueryExecution",
                    "athena:GetWorkGroup",
                ],
                [self.workgroup_arn],
            ),
            (["athena:GetDataCatalog"], [_catalog(self)]),
            (["glue:GetDatabase", "glue:GetTable"], [table.catalog_arn, table.database_arn, table.table_arn]),
            (["s3:GetBucketLocation"], [bucket.bucket_arn]),
            (["s3:ListMultipartUploadParts"], [bucket.arn_for_objects(f"{ATHENA_RESULTS}*")]),
            (["s3:ListBucketMultipartUploads"], [bucket.bucket_arn]),
        ):
            role.add_to_principal_policy(iam.PolicyStatement(actions=actions_, resources=resources))
        list_objects(role, bucket, f"{schema.PREFIX}/")
        list_objects(role, bucket, ATHENA_RESULTS)
        read_objects(role, bucket, f"{schema.PREFIX}/", why="the prediction log's Parquet, which the queries scan")
        write_objects(role, bucket, ATHENA_RESULTS, why="the queries' results (Athena writes them as the caller)")
        read_objects(role, bucket, ATHENA_RESULTS, why="the queries' results")

    def _schedule(self, prefix: str, models: list[str], key: kms.IKey) -> scheduler.CfnSchedule:
        role = iam.Role(
            self,
            "ScheduleRole",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": Stack.of(self).account}},
            ),
            description=f"{prefix}: EventBridge Scheduler starts the monitoring workflow",
        )
        self.machine.grant_start_execution(role)
        schedule = scheduler.CfnSchedule(
            self,
            "Schedule",
            name=f"{prefix}-monitor",
            description="the monitoring checks of every model over the hour before",
            schedule_expression=SCHEDULE,
            schedule_expression_timezone="UTC",
            flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
            state="ENABLED" if models else "DISABLED",
            kms_key_arn=key.key_arn,
            target=scheduler.CfnSchedule.TargetProperty(
                arn=self.machine.state_machine_arn,
                role_arn=role.role_arn,
                # no window: each version's own (its manifest's monitoring.window)
                input=json.dumps(
                    {"models": models, "window": None, "scheduled_time": "<aws.scheduler.scheduled-time>"}
                ),
                retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(
                    maximum_event_age_in_seconds=3600, maximum_retry_attempts=3
                ),
            ),
        )
        schedule.node.add_dependency(role)
        # With a customer managed key, Scheduler decrypts the schedule's target input as its execution
        # role (Scheduler user guide, "Encryption at rest": kms:Decrypt on the key for the role).
        key.grant_decrypt(role)
        return schedule

    def _alarm(
        self,
        id: str,
        name: str,
        description: str,
        metric: cloudwatch.IMetric,
        action: actions.SnsAction,
        *,
        threshold: float = 1,
        missing: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
    ) -> cloudwatch.Alarm:
        """An alarm to the topic when one period's value reaches `threshold`."""
        alarm = cloudwatch.Alarm(
            self,
            id,
            alarm_name=name,
            alarm_description=description,
            metric=metric,
            threshold=threshold,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=missing,
        )
        alarm.add_alarm_action(action)
        return alarm

    def _alarms(self, prefix: str, models: list[str], topic: sns.ITopic, stream: str | None) -> list[cloudwatch.Alarm]:
        action = actions.SnsAction(topic)
        alarms = []
        for model in models:
            for kind in (*CHECK_KINDS, RUN_FAILED):
                metric = cloudwatch.Metric(
                    namespace=NAMESPACE,
                    metric_name=FAILED_METRIC,
                    dimensions_map={"Model": model, "Check": kind},
                    statistic="Maximum",
                    period=Duration.hours(1),
                )
                description = (
                    f"{model}: its monitoring run failed (see the workflow's execution)"
                    if kind == RUN_FAILED
                    else f"{model}: a {kind.replace('_', ' ')} check failed (see the report in S3)"
                )
                alarms.append(
                    self._alarm(
                        f"{model}-{kind}-Alarm",
                        # not under the endpoint's name (<prefix>-<model>-...), whose alarms the rollouts own
                        f"{prefix}-monitoring-{model}-{kind.replace('_', '-')}",
                        description,
                        metric,
                        action,
                        # one datum an hour: between them the alarm keeps its state (no OK, then ALARM again)
                        missing=cloudwatch.TreatMissingData.IGNORE,
                    )
                )
        if stream is not None:
            # The log's delivery itself: lines Firehose could not convert to the table's schema (they go
            # to errors/, and the checks would see no traffic), and a delivery running late (the hour's
            # checks would miss lines).
            for id_, name, metric_name, statistic, threshold, what in (
                (
                    "ConversionFailedAlarm",
                    "log-conversion-failed",
                    "FailedConversion.Records",
                    "Sum",
                    1,
                    "prediction log lines Firehose could not convert to the Glue table's schema (see errors/)",
                ),
                (
                    "DeliveryLateAlarm",
                    "log-delivery-late",
                    "DeliveryToS3.DataFreshness",
                    "Maximum",
                    900,
                    "the prediction log reaches S3 more than 15 minutes late: the hourly checks miss lines",
                ),
            ):
                metric = cloudwatch.Metric(
                    namespace="AWS/Firehose",
                    metric_name=metric_name,
                    dimensions_map={"DeliveryStreamName": stream},
                    statistic=statistic,
                    period=Duration.minutes(5),
                )
                alarms.append(
                    self._alarm(id_, f"{prefix}-monitoring-{name}", what, metric, action, threshold=threshold)
                )
        alarms.append(
            self._alarm(
                "RunsFailedAlarm",
                f"{prefix}-monitoring-runs-failed",
                "the monitoring workflow failed (an Athena query or the checks): no verdict this hour",
                self.machine.metric_failed(period=Duration.hours(1), statistic="Sum"),
                action,
            )
        )
        return alarms


def _catalog(scope: Construct) -> str:
    """The account's Glue Data Catalog as Athena names it (the queries' catalog)."""
    return Stack.of(scope).format_arn(service="athena", resource="datacatalog", resource_name="AwsDataCatalog")
