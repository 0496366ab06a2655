"""Encrypted storage: a customer-managed KMS key, the S3 buckets (TLS only, no public access,
versioned, lifecycle rules, access logs), the route table, ElastiCache for Redis (TLS, AUTH,
Multi-AZ) and the Firehose stream that writes prediction logs to S3. Every log group of the stack
is encrypted with the key too (LogGroupsUseKey)."""

from __future__ import annotations

import jsii
from aws_cdk import ArnFormat, CfnResource, Duration, IAspect, RemovalPolicy, Size, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesisfirehose as firehose
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct, IConstruct

from infra.constructs.model_monitoring import LogTable
from infra.nag import acknowledge, acknowledge_key_grant, objects, skip_check, wildcard_action, wildcard_resource
from sagegate.monitoring import schema

REDIS_PORT = 6390  # not the default port


class Data(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        prefix: str,
        vpc: ec2.IVpc,
        cache_node_type: str,
        cache_replicas: int,
        removal: RemovalPolicy,
        log_retention: logs.RetentionDays,
        artifacts: bool = True,
    ) -> None:
        super().__init__(scope, id)
        self.key = environment_key(self, prefix, "artifacts, logs, cache, routes, queues", removal)
        auto_delete = removal == RemovalPolicy.DESTROY
        self.access_logs = access_logs_bucket(self, removal)

        def bucket(name: str, *, expire_days: int | None, ia_days: int = 30, keep_days: int = 30) -> s3.Bucket:
            return encrypted_bucket(
                self,
                name,
                key=self.key,
                access_logs=self.access_logs,
                removal=removal,
                expire_days=expire_days,
                ia_days=ia_days,
                keep_days=keep_days,
            )

        # The registry's packages (models/): in the registry stack instead where that is another account.
        self.artifacts = bucket("Artifacts", expire_days=None, ia_days=90, keep_days=90) if artifacts else None
        self.batch = bucket("Batch", expire_days=90)
        self.capture = bucket("Capture", expire_days=180)
        self.prediction_logs = bucket("PredictionLogs", expire_days=400)
        # Athena's results of the monitoring queries: read by the workflow within the hour, then spent
        self.prediction_logs.add_lifecycle_rule(
            prefix="athena-results/", expiration=Duration.days(7), noncurrent_version_expiration=Duration.days(1)
        )
        if auto_delete:
            _skip_auto_delete_provider(self)

        self.routes = dynamodb.TableV2(
            self,
            "Routes",
            table_name=f"{prefix}-routes",
            partition_key=dynamodb.Attribute(name="model", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="kind", type=dynamodb.AttributeType.STRING),
            billing=dynamodb.Billing.on_demand(),
            encryption=dynamodb.TableEncryptionV2.customer_managed_key(self.key),
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            removal_policy=removal,
        )

        # Redis: TLS in transit, KMS at rest, AUTH token from Secrets Manager, Multi-AZ failover.
        self.cache_security_group = ec2.SecurityGroup(
            self, "CacheSg", vpc=vpc, description="Redis: only from the gateway", allow_all_outbound=False
        )
        self.cache_secret = secretsmanager.Secret(
            self,
            "CacheAuth",
            encryption_key=self.key,
            description=f"{prefix}: Redis AUTH token",
            generate_secret_string=secretsmanager.SecretStringGenerator(exclude_punctuation=True, password_length=64),
            removal_policy=removal,
        )
        subnets = elasticache.CfnSubnetGroup(
            self,
            "CacheSubnets",
            description=f"{prefix} cache",
            subnet_ids=vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED).subnet_ids,
        )
        self.cache = elasticache.CfnReplicationGroup(
            self,
            "Cache",
            replication_group_id=f"{prefix}-cache",
            replication_group_description=f"{prefix}: prediction cache and online features",
            engine="redis",
            engine_version="7.1",
            cache_node_type=cache_node_type,
            num_node_groups=1,
            replicas_per_node_group=cache_replicas,
            automatic_failover_enabled=True,
            multi_az_enabled=True,
            transit_encryption_enabled=True,
            at_rest_encryption_enabled=True,
            kms_key_id=self.key.key_id,
            auth_token=self.cache_secret.secret_value.unsafe_unwrap(),
            port=REDIS_PORT,
            cache_subnet_group_name=subnets.ref,
            security_group_ids=[self.cache_security_group.security_group_id],
            snapshot_retention_limit=3,
        )
        self.cache.apply_removal_policy(removal)

        # Firehose -> S3 (prediction log as Parquet, by model and hour), KMS on both sides.
        self.log_table = LogTable(self, "LogTable", prefix=prefix, bucket=self.prediction_logs)
        self.firehose_logs = logs.LogGroup(self, "FirehoseLogs", retention=log_retention, removal_policy=removal)
        self.predictions = firehose.DeliveryStream(
            self,
            "PredictionLog",
            delivery_stream_name=f"{prefix}-predictions",
            destination=firehose.S3Bucket(
                self.prediction_logs,
                data_output_prefix=schema.data_prefix(),
                error_output_prefix=schema.error_prefix(),
                # format conversion and dynamic partitioning buffer 64 MiB at least
                buffering_interval=Duration.seconds(120),
                buffering_size=Size.mebibytes(64),
                data_format_conversion=firehose.DataFormatConversionProps(
                    # the map keys are feature names: kept as the manifest spells them
                    input_format=firehose.OpenXJsonInputFormat(
                        lowercase_column_names=False, column_to_json_key_mappings=schema.JSON_KEYS
                    ),
                    output_format=firehose.ParquetOutputFormat(compression=firehose.ParquetCompression.SNAPPY),
                    schema_configuration=firehose.SchemaConfiguration.from_cfn_table(self.log_table.table),
                ),
                dynamic_partitioning=firehose.DynamicPartitioningProps(enabled=True),
                processors=[
                    firehose.MetadataExtractionProcessor.jq16({"model": f'.model // "{schema.UNKNOWN_MODEL}"'})
                ],
                encryption_key=self.key,
                logging_config=firehose.EnableLogging(self.firehose_logs),
            ),
            encryption=firehose.StreamEncryption.customer_managed_key(self.key),
        )
        for action in ("s3:Abort*", "s3:DeleteObject*", "s3:GetBucket*", "s3:GetObject*", "s3:List*"):
            acknowledge(
                self.predictions,
                wildcard_action(action),
                "the role CDK builds for Firehose's S3 destination: the action set Firehose documents for"
                " delivery (retries, multipart), on the prediction-log bucket only",
            )
        acknowledge(
            self.predictions,
            wildcard_resource(objects(self.prediction_logs)),
            "Firehose names the objects it delivers (time-partitioned); this bucket holds nothing else",
        )
        acknowledge_key_grant(self.predictions, "the delivery stream and its bucket")
        acknowledge(
            self.predictions,
            wildcard_resource("*"),
            "CDK's record format conversion grants glue:GetSchemaVersion (the Glue Schema Registry, which has"
            " no resource scope for it); the schema Firehose converts with is the log table's, scoped by ARN",
        )


def access_logs_bucket(scope: Construct, removal: RemovalPolicy) -> s3.Bucket:
    """The bucket the server access logs of the others go to."""
    bucket = s3.Bucket(
        scope,
        "AccessLogs",
        encryption=s3.BucketEncryption.S3_MANAGED,  # log delivery cannot use KMS
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        enforce_ssl=True,
        versioned=True,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,  # no ACLs: log delivery by bucket policy
        # Versioned: an expired log stays as a noncurrent version until this removes it.
        lifecycle_rules=[
            s3.LifecycleRule(expiration=Duration.days(365), noncurrent_version_expiration=Duration.days(30))
        ],
        removal_policy=removal,
        auto_delete_objects=removal == RemovalPolicy.DESTROY,
    )
    skip_check(
        bucket,
        "CKV_AWS_18",
        "this is the bucket the others' server access logs go to: logging it would write its own log"
        " objects into a bucket too, one more log bucket with the same finding",
    )
    return bucket


def encrypted_bucket(
    scope: Construct,
    name: str,
    *,
    key: kms.IKey,
    access_logs: s3.IBucket,
    removal: RemovalPolicy,
    expire_days: int | None,
    ia_days: int = 30,
    keep_days: int = 30,
    bucket_name: str | None = None,
) -> s3.Bucket:
    """A bucket of the stack: KMS with a bucket key, TLS only, no public access, access logs, and
    versioned, so that an object deleted or overwritten by mistake can be restored for `keep_days`."""
    rules = [
        s3.LifecycleRule(
            transitions=[
                s3.Transition(storage_class=s3.StorageClass.INFREQUENT_ACCESS, transition_after=Duration.days(ia_days))
            ],
            expiration=Duration.days(expire_days) if expire_days else None,
            noncurrent_version_expiration=Duration.days(keep_days),
            abort_incomplete_multipart_upload_after=Duration.days(7),
        )
    ]
    return s3.Bucket(
        scope,
        name,
        bucket_name=bucket_name,
        encryption=s3.BucketEncryption.KMS,
        encryption_key=key,
        bucket_key_enabled=True,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        enforce_ssl=True,
        versioned=True,
        server_access_logs_bucket=access_logs,
        server_access_logs_prefix=f"{name.lower()}/",
        lifecycle_rules=rules,
        removal_policy=removal,
        auto_delete_objects=removal == RemovalPolicy.DESTROY,
    )


def environment_key(scope: Construct, prefix: str, holds: str, removal: RemovalPolicy) -> kms.Key:
    """The one rotating key of a stack (`alias/<prefix>`), which CloudWatch Logs may use too."""
    key = kms.Key(
        scope,
        "Key",
        alias=f"alias/{prefix}",
        enable_key_rotation=True,
        removal_policy=removal,
        description=f"{prefix}: {holds}",
    )
    allow_logs(key)
    return key


def allow_logs(key: kms.Key) -> None:
    """CloudWatch Logs encrypts and decrypts the log groups of this account and region with the key:
    the statement of AWS's guide (Encrypt log data in CloudWatch Logs using AWS KMS), with the
    regional principal and the log group ARN of the encryption context."""
    stack = Stack.of(key)
    log_groups = stack.format_arn(
        service="logs", resource="log-group", resource_name="*", arn_format=ArnFormat.COLON_RESOURCE_NAME
    )
    key.add_to_resource_policy(
        iam.PolicyStatement(
            principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
            actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
            resources=["*"],
            conditions={"ArnLike": {"kms:EncryptionContext:aws:logs:arn": log_groups}},
        )
    )


@jsii.implements(IAspect)
class LogGroupsUseKey:
    """Every log group under the construct it is added to is encrypted with `key` (execution data of
    the state machines, request logs, flow logs): one rule for the log groups made here and for those
    CDK makes itself."""

    def __init__(self, key: kms.IKey) -> None:
        self.key = key

    def visit(self, node: IConstruct) -> None:
        if isinstance(node, logs.CfnLogGroup) and node.kms_key_id is None:
            node.kms_key_id = self.key.key_arn


def _skip_auto_delete_provider(scope: Construct) -> None:
    """CDK's own function that empties the buckets when the stack is destroyed (auto_delete_objects)."""
    provider = Stack.of(scope).node.find_child("Custom::S3AutoDeleteObjectsCustomResourceProvider")
    handler = provider.node.find_child("Handler")
    assert isinstance(handler, CfnResource)
    skip_check(
        handler,
        "CKV_AWS_116",
        "CDK's auto_delete_objects provider, invoked by CloudFormation, which waits for its answer and fails the"
        " stack operation on an error: there is no lost event for a dead-letter queue to keep",
    )
    skip_check(
        handler,
        "CKV_AWS_117",
        "CDK's auto_delete_objects provider calls the S3 API only (this stack's buckets, when they are"
        " destroyed); it reaches nothing in the VPC",
    )
