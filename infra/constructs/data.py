"""Encrypted storage: a customer-managed KMS key, the S3 buckets (TLS only, no public access,
versioned, lifecycle rules, access logs), the route table, ElastiCache for Redis (TLS, AUTH,
Multi-AZ) and the Firehose stream that writes prediction logs to S3."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesisfirehose as firehose
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.nag import acknowledge, acknowledge_key_grant, objects, wildcard_action, wildcard_resource

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
    ) -> None:
        super().__init__(scope, id)
        self.key = kms.Key(
            self,
            "Key",
            alias=f"alias/{prefix}",
            enable_key_rotation=True,
            removal_policy=removal,
            description=f"{prefix}: artifacts, logs, cache, routes, queues",
        )
        self.key.grant_encrypt_decrypt(iam.ServicePrincipal("logs.amazonaws.com"))
        auto_delete = removal == RemovalPolicy.DESTROY
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,  # log delivery cannot use KMS
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,  # no ACLs: log delivery by bucket policy
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(365))],
            removal_policy=removal,
            auto_delete_objects=auto_delete,
        )

        def bucket(name: str, *, versioned: bool, expire_days: int | None, ia_days: int = 30) -> s3.Bucket:
            rules = [
                s3.LifecycleRule(
                    transitions=[
                        s3.Transition(
                            storage_class=s3.StorageClass.INFREQUENT_ACCESS, transition_after=Duration.days(ia_days)
                        )
                    ],
                    expiration=Duration.days(expire_days) if expire_days else None,
                    noncurrent_version_expiration=Duration.days(90) if versioned else None,
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                )
            ]
            return s3.Bucket(
                self,
                name,
                encryption=s3.BucketEncryption.KMS,
                encryption_key=self.key,
                bucket_key_enabled=True,
                block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                enforce_ssl=True,
                versioned=versioned,
                server_access_logs_bucket=self.access_logs,
                server_access_logs_prefix=f"{name.lower()}/",
                lifecycle_rules=rules,
                removal_policy=removal,
                auto_delete_objects=auto_delete,
            )

        self.artifacts = bucket("Artifacts", versioned=True, expire_days=None, ia_days=90)
        self.batch = bucket("Batch", versioned=False, expire_days=90)
        self.capture = bucket("Capture", versioned=False, expire_days=180)
        self.prediction_logs = bucket("PredictionLogs", versioned=False, expire_days=400)

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

        # Firehose -> S3 (prediction log), KMS on both sides.
        self.firehose_logs = logs.LogGroup(self, "FirehoseLogs", retention=log_retention, removal_policy=removal)
        self.predictions = firehose.DeliveryStream(
            self,
            "PredictionLog",
            delivery_stream_name=f"{prefix}-predictions",
            destination=firehose.S3Bucket(
                self.prediction_logs,
                data_output_prefix="predictions/dt=!{timestamp:yyyy-MM-dd}/",
                error_output_prefix="errors/!{firehose:error-output-type}/dt=!{timestamp:yyyy-MM-dd}/",
                buffering_interval=Duration.seconds(60),
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
