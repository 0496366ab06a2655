"""The prediction API: a regional REST API in front of the gateway Lambda (in the VPC, beside the
cache). Only the gateway's own routes exist at the edge, path parameters are required there and a
body that is not a JSON object is answered 422 without invoking the Lambda. Auth is IAM (SigV4) or
API keys with a usage plan; throttling per stage and per key; access logs; JSON error bodies."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.constructs.functions import python_function
from infra.nag import acknowledge, skip_check

STAGE = "api"  # https://<id>.execute-api.<region>.amazonaws.com/api/v1/predict
# The gateway's routes (tests/infra checks them against the FastAPI app); nothing else reaches the Lambda.
ROUTES: dict[str, list[str]] = {
    "/v1/predict": ["POST"],
    "/v1/explain": ["POST"],
    "/v1/models": ["GET"],
    "/v1/models/{name}": ["GET"],
    "/v1/feedback": ["POST"],
    "/v1/batch_predict": ["POST"],
    "/v1/jobs/{job_id}": ["GET"],
    "/health": ["GET"],
    "/openapi.json": ["GET"],
}
# What the edge checks of a body: that it is a JSON object. The fields are the gateway's to check,
# because its 422 names each field and reason; a gateway response can only substitute variables.
JSON_OBJECT = apigw.JsonSchema(
    schema=apigw.JsonSchemaVersion.DRAFT4, title="JsonObject", type=apigw.JsonSchemaType.OBJECT
)


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
        self.function = python_function(
            self,
            "Gateway",
            function_name=f"{prefix}-gateway",
            handler="gateway_handler.handler",
            code=code,
            log_retention=log_retention,
            removal=removal,
            memory_size=memory_mb,
            timeout=Duration.seconds(29),
            vpc=vpc,
            security_groups=[self.security_group],
            environment={
                **environment,
                "POWERTOOLS_SERVICE_NAME": "sagegate-gateway",
                "POWERTOOLS_TRACE_DISABLED": "false" if tracing else "true",
            },
            tracing=lambda_.Tracing.ACTIVE if tracing else lambda_.Tracing.DISABLED,
        )
        skip_check(
            self.function,
            "CKV_AWS_116",
            "API Gateway is the gateway's only caller and invokes it synchronously (the caller gets the error):"
            " no invocation is asynchronous, so there is nothing for a dead-letter queue to keep",
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
                stage_name=STAGE,
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
            ),
        )
        acknowledge(
            self.api,
            "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]",
            "API Gateway's account-level logging role (one per account and region) for the stage's execution"
            " logs; the managed policy is the one API Gateway documents for it",
        )
        acknowledge(
            self.api,
            "COG4",
            "the callers are services, not people signing in: they authenticate with SigV4 (api_auth: iam) or"
            " an API key of a usage plan (api_auth: api_key); there is no user pool to point an authorizer at",
        )
        if not iam_auth:
            acknowledge(
                self.api,
                "APIG4",
                "api_auth: api_key for this environment: every method requires an API key of the usage plan"
                " (throttled per key); environments that need caller identity set api_auth: iam (SigV4)",
            )
        stage = self.api.deployment_stage
        skip_check(
            stage,
            "CKV_AWS_120",
            "API Gateway caches by path and query string: the predictions are answers to POST bodies, the other"
            " routes are live model and job state; the gateway caches predictions itself (Redis, keyed by model,"
            " version and features)",
        )
        if not tracing:
            skip_check(
                stage,
                "CKV_AWS_73",
                "tracing: false in this environment's settings (X-Ray's per-trace cost); the stage's access and"
                " execution logs still record every request",
            )
        self._routes()
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

    def _routes(self) -> None:
        validator = self.api.add_request_validator(
            "Validator", validate_request_body=True, validate_request_parameters=True
        )
        json_object = self.api.add_model("JsonObject", content_type="application/json", schema=JSON_OBJECT)
        for path, methods in ROUTES.items():
            resource = self.api.root.resource_for_path(path)
            params = {f"method.request.path.{p.strip('{}')}": True for p in path.split("/") if p.startswith("{")}
            for method in methods:
                resource.add_method(
                    method,
                    request_validator=validator,
                    request_parameters=params or None,
                    request_models={"application/json": json_object} if method == "POST" else None,
                )
        # The edge's own refusals read like the gateway's: JSON, and 422 for a body that fails its schema.
        self.api.add_gateway_response(
            "InvalidBody",
            type=apigw.ResponseType.BAD_REQUEST_BODY,
            status_code="422",
            templates={"application/json": '{"error": "invalid request: the body must be a JSON object"}'},
        )
        self.api.add_gateway_response(
            "Refused",
            type=apigw.ResponseType.DEFAULT_4_XX,
            templates={"application/json": '{"error": $context.error.messageString}'},
        )
