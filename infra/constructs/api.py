"""The prediction API: a regional REST API in front of the gateway Lambda (in the VPC, beside the
cache), with API keys and a usage plan or IAM auth, throttling, request validation and access logs."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct


class Api(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        prefix: str,
        vpc: ec2.IVpc,
        code: lambda_.Code,
        environment: dict[str, str],
        auth: str,
        throttle_rate: float,
        throttle_burst: int,
        provisioned_concurrency: int,
        memory_mb: int,
        tracing: bool,
        log_retention: logs.RetentionDays,
        removal: RemovalPolicy,
    ) -> None:
        super().__init__(scope, id)
        self.security_group = ec2.SecurityGroup(
            self,
            "GatewaySg",
            vpc=vpc,
            description="the gateway Lambda: out to Redis and the VPC endpoints",
            allow_all_outbound=True,
        )
        self.function = lambda_.Function(
            self,
            "Gateway",
            function_name=f"{prefix}-gateway",
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=lambda_.Architecture.X86_64,
            handler="gateway_handler.handler",
            code=code,
            memory_size=memory_mb,
            timeout=Duration.seconds(29),
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
            security_groups=[self.security_group],
            environment={
                **environment,
                "POWERTOOLS_SERVICE_NAME": "sagegate-gateway",
                "POWERTOOLS_TRACE_DISABLED": "false" if tracing else "true",
            },
            tracing=lambda_.Tracing.ACTIVE if tracing else lambda_.Tracing.DISABLED,
            log_group=logs.LogGroup(self, "GatewayLogs", retention=log_retention, removal_policy=removal),
        )
        target: lambda_.IFunction = self.function
        if provisioned_concurrency:
            target = lambda_.Alias(
                self,
                "Live",
                alias_name="live",
                version=self.function.current_version,
                provisioned_concurrent_executions=provisioned_concurrency,
            )
        access_logs = logs.LogGroup(self, "AccessLogs", retention=log_retention, removal_policy=removal)
        iam_auth = auth == "iam"
        self.api = apigw.LambdaRestApi(
            self,
            "Api",
            rest_api_name=f"{prefix}-api",
            handler=target,
            proxy=False,
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=removal,
            deploy_options=apigw.StageOptions(
                stage_name="v1",
                throttling_rate_limit=throttle_rate,
                throttling_burst_limit=throttle_burst,
                logging_level=apigw.MethodLoggingLevel.INFO,
                tracing_enabled=tracing,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
            ),
            default_method_options=apigw.MethodOptions(
                authorization_type=apigw.AuthorizationType.IAM if iam_auth else apigw.AuthorizationType.NONE,
                api_key_required=not iam_auth,
                request_validator_options=apigw.RequestValidatorOptions(
                    validate_request_body=False, validate_request_parameters=True
                ),
            ),
        )
        self.api.root.add_proxy(any_method=True)
        self.usage_plan = None
        if not iam_auth:
            key = self.api.add_api_key("ApiKey", api_key_name=f"{prefix}-default")
            self.usage_plan = self.api.add_usage_plan(
                "UsagePlan",
                name=f"{prefix}-default",
                throttle=apigw.ThrottleSettings(rate_limit=throttle_rate, burst_limit=throttle_burst),
            )
            self.usage_plan.add_api_key(key)
            self.usage_plan.add_api_stage(stage=self.api.deployment_stage)
