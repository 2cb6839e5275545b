"""The HTTP API: API Gateway REST API (regional) proxying every path to the API function.

API keys (``x-api-key``) are checked by the API function against hashed keys in the runtime
table (``LAMBDAGRAPH_API_KEYS_IN_TABLE``), so each key is a tenant; API Gateway passes the
header through. The stage throttles, writes JSON access logs and traces with X-Ray. Bodies over
``API_MAX_BODY_BYTES`` are refused with 413 by the function (API Gateway's own cap is 10 MB).
"""

from __future__ import annotations

from collections.abc import Mapping

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
    ) -> None:
        super().__init__(scope, construct_id)
        self.handler = ServiceFunction(self, API_FUNCTION, code=code, environment=environment)
        self.access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=retention_days(LOG_RETENTION_DAYS),
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.rest_api = apigw.LambdaRestApi(
            self,
            "RestApi",
            handler=self.handler.alias,
            proxy=True,
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
        self.url = self.rest_api.url
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
