"""The HTTP API: API Gateway REST API (regional) proxying every path to the API function
(but the stream routes, ``infra.constructs.streaming``).

API keys (``x-api-key``) are checked by the API function against hashed keys in the runtime
table (``LAMBDAGRAPH_API_KEYS_IN_TABLE``), so each key is a tenant; API Gateway passes the
header through. The stage throttles, writes JSON access logs and traces with X-Ray. Bodies over
``API_MAX_BODY_BYTES`` are refused with 413 by the function (API Gateway's own cap is 10 MB).

CORS: the ``ANY`` proxy methods pass browsers' preflights to the function, which answers them
before authentication (``functions/api_cors.py``, allowed origins from ``LAMBDAGRAPH_CORS_ORIGINS``,
set from the ``corsOrigins`` deployment parameter). What API Gateway answers by itself (429
when throttled, 504 at the 29 s wall, 502) gets ``Access-Control-Allow-Origin`` too, so a page
can read it instead of seeing an opaque network error.

The execution-log group API Gateway writes to is created here, before the stage that logs to
it, so it has a retention and goes with the stack (API Gateway would create it outside).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from functions.resources import (
    API_FUNCTION,
    API_THROTTLE_BURST,
    API_THROTTLE_RATE_RPS,
    LOG_RETENTION_DAYS,
)
from infra.constructs.function import ServiceFunction, retention_days
from infra.constructs.nag import acknowledge

STAGE_NAME = "v1"


class Api(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        code: lambda_.Code,
        environment: Mapping[str, str],
        cors_origins: Sequence[str] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        self.handler = ServiceFunction(self, API_FUNCTION, code=code, environment=environment)
        self.access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=retention_days(LOG_RETENTION_DAYS),
            removal_policy=RemovalPolicy.DESTROY,
        )
        # Every path goes to the API function (``{proxy+}``), as LambdaRestApi's proxy does;
        # a RestApi so that other constructs may add resources (the stream routes,
        # infra/constructs/streaming.py), whose own methods default to the API function too.
        self.integration = apigw.LambdaIntegration(self.handler.alias)
        self.rest_api = apigw.RestApi(
            self,
            "RestApi",
            default_integration=self.integration,
            description="lambdagraph: LangGraph-Platform-shaped API",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # The account-level role API Gateway needs to write access and execution logs. It
            # is kept on `cdk destroy`: the account setting (shared by every API in the region)
            # keeps pointing at it.
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            deploy_options=apigw.StageOptions(
                stage_name=STAGE_NAME,
                throttling_rate_limit=API_THROTTLE_RATE_RPS,
                throttling_burst_limit=API_THROTTLE_BURST,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=False,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=False,
                ),
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,
                tracing_enabled=True,
            ),
        )
        self.rest_api.root.add_proxy()
        self.url = self.rest_api.url
        self.execution_logs = logs.LogGroup(
            self,
            "ExecutionLogs",
            log_group_name=f"API-Gateway-Execution-Logs_{self.rest_api.rest_api_id}/{STAGE_NAME}",
            retention=retention_days(LOG_RETENTION_DAYS),
            removal_policy=RemovalPolicy.DESTROY,
        )
        # Created first: API Gateway makes the group itself on its first write otherwise.
        self.rest_api.deployment_stage.node.add_dependency(self.execution_logs)
        if cors_origins:
            self._cors_on_gateway_answers(cors_origins)
        acknowledge(
            self.rest_api,
            {
                "AwsSolutions-APIG2": (
                    "The API function validates every body with pydantic and answers 422 with "
                    "{'detail': ...}, the LangGraph Platform contract; API Gateway's 400 would break it."
                ),
                "AwsSolutions-APIG3": (
                    "No WAF: it has a fixed monthly cost; stage throttling and the function's "
                    "API key check and body size limit protect the API."
                ),
                "AwsSolutions-APIG4": (
                    "API keys (x-api-key) are checked in the API function against hashed keys in "
                    "the runtime table, where each key is a tenant (see docs/run-path.md)."
                ),
                "AwsSolutions-COG4": (
                    "No Cognito: clients authenticate with x-api-key, checked by the API function."
                ),
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]": (
                    "AWS's policy for the API Gateway account role that writes the access logs."
                ),
            },
        )

    def _cors_on_gateway_answers(self, origins: Sequence[str]) -> None:
        """``Access-Control-Allow-Origin`` on what API Gateway answers without the function."""
        # One origin (or *) is written as is; with several, the request's own Origin is
        # echoed on these error answers only (the function checks it for everything else).
        origin = f"'{origins[0]}'" if len(origins) == 1 else "method.request.header.Origin"
        headers = {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Expose-Headers": "'Content-Location, Location'",
            "Vary": "'Origin'",
        }
        for response_type in (apigw.ResponseType.DEFAULT_4_XX, apigw.ResponseType.DEFAULT_5_XX):
            self.rest_api.add_gateway_response(
                f"Cors{response_type.response_type}", type=response_type, response_headers=headers
            )
