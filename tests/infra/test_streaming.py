"""GIVEN the synthesized template THEN the three stream routes are API Gateway REST methods
streaming (response transfer mode ``STREAM``) from the stream function's ``live`` alias, a
Python web server under Lambda Web Adapter, and every other path still reaches the API
function as before."""

from __future__ import annotations

import json
import os
import stat
from typing import Any

import pytest

from functions.resources import (
    API_FUNCTION,
    STREAM_FUNCTION,
    STREAM_GATEWAY_LIMIT_S,
    STREAM_PORT,
    STREAM_READINESS_PATH,
)
from functions.settings import Settings
from infra.bundling import assemble_asset
from infra.constructs.streaming import LWA_LAYER_ACCOUNT, LWA_LAYER_NAME, STREAM_ROUTES
from tests.infra.conftest import Synth

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("infra")]


def _function(synth: Synth, spec: Any) -> tuple[str, dict[str, Any]]:
    (found,) = [
        (logical_id, fn["Properties"])
        for logical_id, fn in synth.resources("AWS::Lambda::Function").items()
        if fn["Properties"]["Handler"] == spec.handler
    ]
    return found


def _alias(synth: Synth, function_id: str) -> str:
    (alias,) = [
        logical_id
        for logical_id, alias in synth.resources("AWS::Lambda::Alias").items()
        if alias["Properties"]["FunctionName"] == {"Ref": function_id}
    ]
    return alias


def _paths(synth: Synth) -> dict[str, str]:
    """Resource logical id -> its path (``/threads/{thread_id}/runs/stream``)."""
    resources = synth.resources("AWS::ApiGateway::Resource")
    (rest_api_id,) = synth.resources("AWS::ApiGateway::RestApi")

    def path(logical_id: str) -> str:
        props = resources[logical_id]["Properties"]
        parent = props["ParentId"]
        if parent == {"Fn::GetAtt": [rest_api_id, "RootResourceId"]}:
            return f"/{props['PathPart']}"
        return f"{path(parent['Ref'])}/{props['PathPart']}"

    return {logical_id: path(logical_id) for logical_id in resources}


def _methods(synth: Synth) -> dict[tuple[str, str], dict[str, Any]]:
    """(HTTP method, path) -> the method's properties."""
    paths = _paths(synth)
    found = {}
    for method in synth.resources("AWS::ApiGateway::Method").values():
        props = method["Properties"]
        resource = props["ResourceId"]
        path = paths[resource["Ref"]] if "Ref" in resource else "/"
        found[(props["HttpMethod"], path)] = props
    return found


def _target(integration: dict[str, Any]) -> tuple[str, str]:
    """(the alias the integration invokes, the Lambda API path it invokes it with)."""
    parts = integration["Uri"]["Fn::Join"][1]
    (alias,) = [part["Ref"] for part in parts if isinstance(part, dict) and "Ref" in part][2:]
    return alias, "".join(part for part in parts if isinstance(part, str))


def test_the_three_stream_routes_stream_from_the_stream_functions_alias(synth: Synth) -> None:
    # GIVEN the stream function's alias and the API's methods
    stream_alias = _alias(synth, _function(synth, STREAM_FUNCTION)[0])
    methods = _methods(synth)
    # THEN each stream route is a Lambda proxy integration in STREAM mode on that alias,
    # invoked with InvokeWithResponseStream, for as long as API Gateway streams
    for verb, path in STREAM_ROUTES:
        integration = methods[(verb, f"/{path}")]["Integration"]
        assert integration["Type"] == "AWS_PROXY"
        assert integration["ResponseTransferMode"] == "STREAM", path
        assert integration["TimeoutInMillis"] == STREAM_GATEWAY_LIMIT_S * 1000
        alias, uri = _target(integration)
        assert alias == stream_alias
        assert ":lambda:path/2021-11-15/functions/" in uri
        assert uri.endswith("/response-streaming-invocations")


def test_every_other_method_and_path_goes_to_the_api_function_buffered(synth: Synth) -> None:
    # GIVEN the API function's alias
    api_alias = _alias(synth, _function(synth, API_FUNCTION)[0])
    streamed = {(verb, f"/{path}") for verb, path in STREAM_ROUTES}
    methods = _methods(synth)
    others = {key: props for key, props in methods.items() if key not in streamed}
    # THEN the rest is the API function's, as before the stream routes: the root, the
    # root's {proxy+} and every resource the stream routes added on the way (ANY), with a
    # {proxy+} below each where API Gateway allows one
    assert {("ANY", "/"), ("ANY", "/{proxy+}")} <= set(others)
    for _verb, path in STREAM_ROUTES:
        parts = path.split("/")
        for depth in range(1, len(parts) + 1):
            assert ("ANY", "/" + "/".join(parts[:depth])) in others, (path, depth)
    for below in ("/threads/{thread_id}", "/threads/{thread_id}/runs/{run_id}", "/runs"):
        assert ("ANY", f"{below}/{{proxy+}}") in others, below
    for key, props in others.items():
        integration = props["Integration"]
        assert integration["Type"] == "AWS_PROXY", key
        assert "ResponseTransferMode" not in integration or (
            integration["ResponseTransferMode"] == "BUFFERED"
        ), key
        alias, uri = _target(integration)
        assert alias == api_alias, key
        assert uri.endswith("/invocations"), key
        assert ":lambda:path/2015-03-31/functions/" in uri, key


def test_stream_routes_are_authorized_as_every_route_by_the_functions_key_check(
    synth: Synth,
) -> None:
    # GIVEN every method of the API
    methods = _methods(synth)
    # THEN none has an API Gateway authorizer or API Gateway key: the functions check
    # x-api-key themselves (functions/auth.py), the stream routes as every other one
    settings = {
        (props["AuthorizationType"], props.get("ApiKeyRequired", False))
        for props in methods.values()
    }
    assert settings == {("NONE", False)}
    # AND the stream function checks keys in the runtime table, as the API function does
    _, stream = _function(synth, STREAM_FUNCTION)
    assert stream["Environment"]["Variables"]["LAMBDAGRAPH_API_KEYS_IN_TABLE"] == "true"


def test_only_api_gateway_of_this_api_may_invoke_the_stream_function(synth: Synth) -> None:
    stream_alias = _alias(synth, _function(synth, STREAM_FUNCTION)[0])
    (rest_api_id,) = synth.resources("AWS::ApiGateway::RestApi")
    permissions = [
        p["Properties"]
        for p in synth.resources("AWS::Lambda::Permission").values()
        if p["Properties"]["FunctionName"] == {"Ref": stream_alias}
    ]
    assert permissions
    for permission in permissions:
        assert permission["Action"] == "lambda:InvokeFunction"  # covers the streaming invoke
        assert permission["Principal"] == "apigateway.amazonaws.com"
        assert rest_api_id in json.dumps(permission["SourceArn"])


def test_the_stream_function_runs_under_lambda_web_adapter(synth: Synth) -> None:
    # GIVEN the stream function
    _, fn = _function(synth, STREAM_FUNCTION)
    env = fn["Environment"]["Variables"]
    # THEN it has AWS's arm64 Lambda Web Adapter layer
    (layer,) = fn["Layers"]
    arn = "".join(p if isinstance(p, str) else f"<{p['Ref']}>" for p in layer["Fn::Join"][1])
    assert arn.startswith("arn:aws:lambda:<AWS::Region>:")
    assert f":{LWA_LAYER_ACCOUNT}:layer:{LWA_LAYER_NAME}:" in arn
    assert arn.rsplit(":", 1)[1].isdigit(), "the layer version is pinned"
    # AND the adapter's settings: the wrapper, streaming, the server's port and readiness
    assert env["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/bootstrap"
    assert env["AWS_LWA_INVOKE_MODE"] == "response_stream"
    assert env["PORT"] == str(STREAM_PORT)
    assert env["AWS_LWA_READINESS_CHECK_PATH"] == STREAM_READINESS_PATH
    # AND it lives as long as API Gateway streams; the stream ends before, for the SDK to
    # reconnect with Last-Event-ID
    assert fn["Timeout"] == STREAM_GATEWAY_LIMIT_S == 900
    assert 0 < float(env["LAMBDAGRAPH_STREAM_MAX_S"]) < STREAM_GATEWAY_LIMIT_S - 30
    assert fn["Architectures"] == ["arm64"]


def test_the_stream_function_has_the_api_functions_settings(synth: Synth) -> None:
    # GIVEN both functions' environments
    _, stream = _function(synth, STREAM_FUNCTION)
    _, api = _function(synth, API_FUNCTION)
    stream_env = stream["Environment"]["Variables"]
    api_env = api["Environment"]["Variables"]
    # THEN the stream function has every setting the API function has, the same, plus its own
    own = {"LAMBDAGRAPH_STREAM_MAX_S", "PORT"} | {k for k in stream_env if k.startswith("AWS_")}
    assert {k: v for k, v in stream_env.items() if k not in own} == api_env
    assert stream_env["LAMBDAGRAPH_STREAM_MAX_S"] == f"{Settings().stream_max_s:g}"


def test_the_start_script_is_in_the_asset_executable_and_runs_the_stream_server(
    tmp_path: Any,
) -> None:
    # GIVEN the code asset, as CDK zips it (with file modes)
    asset = assemble_asset(None, out=tmp_path / "asset")
    script = asset / STREAM_FUNCTION.handler
    # THEN the handler is a shell script, executable, that runs the stream server
    assert script.is_file()
    mode = script.stat().st_mode
    executable = stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
    assert mode & executable == executable
    text = script.read_text()
    assert text.startswith("#!/bin/bash\n")
    module = STREAM_FUNCTION.entry.rpartition(".")[0]
    assert f"exec python3 -m {module}" in text
    assert os.access(script, os.X_OK)


def test_the_stream_function_is_canary_released_and_alarmed_like_the_others(
    synth: Synth,
) -> None:
    function_id, _ = _function(synth, STREAM_FUNCTION)
    alias = synth.json["Resources"][_alias(synth, function_id)]
    group_id = alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]["DeploymentGroupName"]["Ref"]
    group = synth.json["Resources"][group_id]["Properties"]
    assert group["DeploymentConfigName"] == "CodeDeployDefault.LambdaCanary10Percent5Minutes"
    alarmed = {
        a["Properties"]["MetricName"]
        for a in synth.resources("AWS::CloudWatch::Alarm").values()
        if function_id in json.dumps(a["Properties"].get("Dimensions", []))
    }
    assert {"Errors", "Throttles"} <= alarmed
