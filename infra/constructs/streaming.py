"""The stream routes on AWS: API Gateway REST response streaming to a Python web server.

Python has no native Lambda response streaming, so the stream function is the one code asset
run as a web server (``functions/handlers/stream.py``, started by ``run_stream.sh``) under AWS
Lambda Web Adapter, the AWS-published layer: its ``/opt/bootstrap`` (``AWS_LAMBDA_EXEC_WRAPPER``)
runs the start script, waits for ``GET /ok`` on ``PORT`` and forwards each invocation to the
server, streaming the answer back (``AWS_LWA_INVOKE_MODE=response_stream``, so Lambda is
invoked with ``InvokeWithResponseStream``).

API Gateway: the three stream routes are explicit resources whose ``POST``/``GET`` is a Lambda
proxy integration on the stream function's ``live`` alias with response transfer mode
``STREAM`` (the ``2021-11-15/.../response-streaming-invocations`` URI), up to 15 minutes.
Explicit resources beat the API's ``{proxy+}``; so that every other path still reaches the API
function exactly as before, each resource added on the way (``/threads``,
``/threads/{thread_id}``, ...) answers ``ANY`` with the API function and carries a
``{proxy+}`` child where API Gateway allows one (one variable path part per level), and the
stream resources answer their other methods (a browser's CORS preflight) with the API
function too. Auth is as on every route: no API Gateway authorizer; the function checks
``x-api-key`` (``functions.streaming.http`` -> ``functions.auth``).
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from functions.resources import (
    STREAM_FUNCTION,
    STREAM_GATEWAY_LIMIT_S,
    STREAM_MAX_S,
    STREAM_PORT,
    STREAM_READINESS_PATH,
)
from infra.constructs.function import ServiceFunction

# AWS Lambda Web Adapter, the layer AWS publishes (account 753240598075), arm64. Version 26 is
# LWA 1.0.0-rc1, the one LWA's README names for zip packages (awslabs/aws-lambda-web-adapter,
# March 2026); 25 is 0.9.1, the last 0.x. The settings below mean the same in both.
LWA_LAYER_ACCOUNT = "753240598075"
LWA_LAYER_NAME = "LambdaAdapterLayerArm64"
LWA_LAYER_VERSION = 26

# The stream routes (functions/streaming/http.py), as API Gateway resource paths.
STREAM_ROUTES: tuple[tuple[str, str], ...] = (
    ("POST", "threads/{thread_id}/runs/stream"),
    ("POST", "runs/stream"),
    ("GET", "threads/{thread_id}/runs/{run_id}/stream"),
)
# Resources the stream routes add on the way, and whether each gets a ``{proxy+}`` child for
# the API's other paths below it (not beside a path variable: API Gateway allows one).
_ON_THE_WAY: tuple[tuple[str, bool], ...] = (
    ("threads", False),  # beside {thread_id}
    ("threads/{thread_id}", True),  # /state, /history, /copy, ...
    ("threads/{thread_id}/runs", False),  # beside {run_id}
    ("threads/{thread_id}/runs/{run_id}", True),  # /join, /cancel, ...
    ("runs", True),  # /wait, /batch, ...
)


def lwa_environment() -> dict[str, str]:
    """What Lambda Web Adapter reads (its README, "Configurations")."""
    return {
        "AWS_LAMBDA_EXEC_WRAPPER": "/opt/bootstrap",
        "AWS_LWA_INVOKE_MODE": "response_stream",
        "PORT": str(STREAM_PORT),
        "AWS_LWA_READINESS_CHECK_PATH": STREAM_READINESS_PATH,
    }


class StreamRoutes(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        code: lambda_.Code,
        environment: Mapping[str, str],
        rest_api: apigw.RestApi,
    ) -> None:
        super().__init__(scope, construct_id)
        layer = lambda_.LayerVersion.from_layer_version_arn(
            self,
            "WebAdapter",
            f"arn:aws:lambda:{Stack.of(self).region}:{LWA_LAYER_ACCOUNT}:layer:"
            f"{LWA_LAYER_NAME}:{LWA_LAYER_VERSION}",
        )
        self.handler = ServiceFunction(
            self,
            STREAM_FUNCTION,
            code=code,
            environment={
                **environment,
                **lwa_environment(),
                # Under the gateway's 15 minutes: the SDK reconnects with Last-Event-ID.
                "LAMBDAGRAPH_STREAM_MAX_S": f"{STREAM_MAX_S:g}",
            },
            layers=[layer],
        )
        self.integration = apigw.LambdaIntegration(
            self.handler.alias,
            proxy=True,
            response_transfer_mode=apigw.ResponseTransferMode.STREAM,
            timeout=Duration.seconds(STREAM_GATEWAY_LIMIT_S),
        )
        root = rest_api.root
        for path, proxy in _ON_THE_WAY:
            resource = root.resource_for_path(path)
            resource.add_method("ANY")  # the API function (the API's default integration)
            if proxy:
                resource.add_proxy()
        self.methods: list[apigw.Method] = []
        for method, path in STREAM_ROUTES:
            resource = root.resource_for_path(path)
            resource.add_method("ANY")  # the API function: CORS preflights, 404/405
            self.methods.append(resource.add_method(method, self.integration))
