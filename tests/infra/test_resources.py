"""GIVEN the synthesized stack WHEN we read its template THEN every part of the run path is there,
configured from the shared definitions in functions/resources.py."""

from __future__ import annotations

import importlib
import json
from typing import Any

import pytest
from aws_cdk.assertions import Match

from functions.resources import (
    ALARM_API_LATENCY_P99_MS,
    ALARM_OLDEST_MESSAGE_AGE_S,
    ALARM_STEP_DURATION_P95_MS,
    API_COLD_START_S,
    API_FUNCTION,
    API_GATEWAY_TIMEOUT_S,
    API_JOIN_TIMEOUT_S,
    API_REQUEST_WORK_S,
    API_THROTTLE_BURST,
    API_THROTTLE_RATE_RPS,
    APPROVAL_NOTIFIER_FUNCTION,
    CACHE_TABLE,
    CHECKPOINT_TABLE,
    HOUSEKEEPING_FUNCTION,
    HOUSEKEEPING_RATE_MINUTES,
    LOG_RETENTION_DAYS,
    MEMORY_TABLE,
    METRIC_API_SERVER_ERRORS,
    METRIC_QUEUE_WAIT,
    METRIC_STEP_DURATION,
    METRIC_STEP_FAILURES,
    METRIC_STEPS,
    METRIC_VERSION_DIMENSION,
    METRICS_NAMESPACE,
    PRIORITIES,
    RUN_FINAL_STATUSES,
    RUNTIME_TABLE,
    SERVICE_NAME,
    STEP_QUEUES,
    STEP_WORKER_FUNCTION,
    STREAM_FUNCTION,
    WEBHOOK_FUNCTION,
    TableSpec,
    run_status_metric,
)
from functions.settings import Settings
from infra.constructs.storage import PAYLOAD_GRACE_DAYS, PITR_DAYS
from tests.infra.conftest import ALARM_EMAIL, CORS_ORIGINS, TTL_DAYS, Synth

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("infra")]

FUNCTION_SPECS = (
    API_FUNCTION,
    STREAM_FUNCTION,
    STEP_WORKER_FUNCTION,
    HOUSEKEEPING_FUNCTION,
    APPROVAL_NOTIFIER_FUNCTION,
    WEBHOOK_FUNCTION,
)


def _functions(synth: Synth) -> dict[str, dict[str, Any]]:
    return synth.resources("AWS::Lambda::Function")


def _function_by_handler(synth: Synth, handler: str) -> tuple[str, dict[str, Any]]:
    matches = [
        (logical_id, fn)
        for logical_id, fn in _functions(synth).items()
        if fn["Properties"]["Handler"] == handler
    ]
    assert len(matches) == 1, f"expected one function with handler {handler}"
    return matches[0]


def _alias_of(synth: Synth, function_id: str) -> str:
    aliases = [
        logical_id
        for logical_id, alias in synth.resources("AWS::Lambda::Alias").items()
        if alias["Properties"]["FunctionName"] == {"Ref": function_id}
    ]
    assert len(aliases) == 1
    return aliases[0]


# --- storage -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [CHECKPOINT_TABLE, RUNTIME_TABLE, CACHE_TABLE, MEMORY_TABLE],
    ids=lambda s: s.logical_id,
)
def test_table_follows_its_shared_spec(synth: Synth, spec: TableSpec) -> None:
    # GIVEN the shared TableSpec
    key_schema = [{"AttributeName": spec.partition_key, "KeyType": "HASH"}]
    if spec.sort_key:
        key_schema.append({"AttributeName": spec.sort_key, "KeyType": "RANGE"})
    indexes = [
        Match.object_like(
            {
                "IndexName": index.name,
                "KeySchema": [
                    {"AttributeName": index.partition_key, "KeyType": "HASH"},
                    *(
                        [{"AttributeName": index.sort_key, "KeyType": "RANGE"}]
                        if index.sort_key
                        else []
                    ),
                ],
            }
        )
        for index in spec.global_indexes
    ]
    # THEN a table has exactly its keys, on-demand billing, PITR, TTL and KMS encryption
    synth.template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "KeySchema": key_schema,
            "BillingMode": "PAY_PER_REQUEST",
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "TimeToLiveSpecification": {"AttributeName": spec.ttl_attribute, "Enabled": True},
            "SSESpecification": {"SSEEnabled": True},  # the AWS-managed KMS key
            "GlobalSecondaryIndexes": indexes if indexes else Match.absent(),
        },
    )


def test_tables_and_bucket_are_retained_by_default(synth: Synth) -> None:
    for kind in ("AWS::DynamoDB::Table", "AWS::S3::Bucket"):
        for logical_id, resource in synth.resources(kind).items():
            assert resource.get("DeletionPolicy") == "Retain", logical_id


def test_payload_bucket_is_private_tls_only_and_expires_after_the_ttl(synth: Synth) -> None:
    synth.template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "BucketEncryption": Match.any_value(),
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [
                        Match.object_like(
                            {"ExpirationInDays": TTL_DAYS + PAYLOAD_GRACE_DAYS, "Status": "Enabled"}
                        )
                    ]
                )
            },
        },
    )
    synth.template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {"PolicyDocument": {"Statement": Match.array_with([_deny_insecure()])}},
    )


def _deny_insecure() -> Any:
    return Match.object_like(
        {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
    )


# --- queues --------------------------------------------------------------------------------


@pytest.mark.parametrize("priority", PRIORITIES)
def test_step_queue_has_a_dlq_and_outlives_the_worker_timeout(synth: Synth, priority: str) -> None:
    spec = STEP_QUEUES[priority]  # type: ignore[index]
    queue = synth.stack.queues.queues[priority]
    dlq_id = synth.logical_id(synth.stack.queues.dlqs[priority])
    props = synth.json["Resources"][synth.logical_id(queue)]["Properties"]

    assert props["VisibilityTimeout"] == spec.visibility_timeout_s
    assert spec.visibility_timeout_s > STEP_WORKER_FUNCTION.timeout_s
    assert props["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
        "maxReceiveCount": spec.max_receive_count,
    }
    assert props["SqsManagedSseEnabled"] is True


def test_every_queue_and_dlq_refuses_plain_http(synth: Synth) -> None:
    queue_ids = set(synth.resources("AWS::SQS::Queue"))
    # The step queues, the approval-requests and webhook deliveries queues, each with its DLQ.
    assert len(queue_ids) == 2 * (len(STEP_QUEUES) + 2)
    protected: set[str] = set()
    for policy in synth.resources("AWS::SQS::QueuePolicy").values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        if any(
            s["Effect"] == "Deny"
            and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
            for s in statements
        ):
            protected.update(ref["Ref"] for ref in policy["Properties"]["Queues"])
    assert protected == queue_ids


# --- functions -----------------------------------------------------------------------------


def test_functions_share_one_asset_and_the_runtime_settings(synth: Synth) -> None:
    functions = _functions(synth)
    assert {fn["Properties"]["Handler"] for fn in functions.values()} == {
        spec.handler for spec in FUNCTION_SPECS
    }
    codes = {json.dumps(fn["Properties"]["Code"], sort_keys=True) for fn in functions.values()}
    assert len(codes) == 1, "every function must use the same code asset"
    for fn in functions.values():
        props = fn["Properties"]
        assert props["Runtime"] == "python3.12"
        assert props["Architectures"] == ["arm64"]
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert "LoggingConfig" in props  # its own log group, with retention (below)


@pytest.mark.parametrize("spec", FUNCTION_SPECS, ids=lambda s: s.logical_id)
def test_function_timeout_memory_and_log_retention_follow_the_spec(synth: Synth, spec: Any) -> None:
    _, fn = _function_by_handler(synth, spec.handler)
    props = fn["Properties"]
    assert (props["Timeout"], props["MemorySize"]) == (spec.timeout_s, spec.memory_mb)
    log_group_id = props["LoggingConfig"]["LogGroup"]["Ref"]
    assert (
        synth.json["Resources"][log_group_id]["Properties"]["RetentionInDays"] == LOG_RETENTION_DAYS
    )


@pytest.mark.parametrize("spec", FUNCTION_SPECS, ids=lambda s: s.logical_id)
def test_handler_string_in_the_template_imports(synth: Synth, spec: Any) -> None:
    # GIVEN the handler string deployed for the function (or, for a start script, the
    # Python entry it runs: tests/infra/test_streaming.py checks the script)
    _, fn = _function_by_handler(synth, spec.handler)
    module_name, _, attribute = (spec.entry or fn["Properties"]["Handler"]).rpartition(".")
    # WHEN the Lambda runtime would import it
    module = importlib.import_module(module_name)
    # THEN it names a callable
    assert callable(getattr(module, attribute))


def test_environment_names_only_settings_the_handlers_read(synth: Synth) -> None:
    settings_vars = {f"LAMBDAGRAPH_{name.upper()}" for name in Settings.model_fields}
    required = {
        CHECKPOINT_TABLE.env_var,
        RUNTIME_TABLE.env_var,
        CACHE_TABLE.env_var,
        MEMORY_TABLE.env_var,
        "LAMBDAGRAPH_PAYLOAD_BUCKET",
        *(spec.env_var for spec in STEP_QUEUES.values()),
        *(spec.dlq_env_var for spec in STEP_QUEUES.values() if spec.dlq_env_var),
    }
    assert required <= settings_vars, "resources.py names an env var Settings does not read"
    for logical_id, fn in _functions(synth).items():
        env = fn["Properties"]["Environment"]["Variables"]
        ours = {name for name in env if name.startswith("LAMBDAGRAPH_")}
        assert ours <= settings_vars, f"{logical_id}: unknown {ours - settings_vars}"
        assert required <= ours, f"{logical_id}: missing {required - ours}"
        assert env["LAMBDAGRAPH_API_KEYS_IN_TABLE"] == "true"
        assert "LAMBDAGRAPH_API_KEYS" not in env, "keys never travel in plain env vars on AWS"
        assert env["POWERTOOLS_SERVICE_NAME"] == SERVICE_NAME
        assert env["POWERTOOLS_METRICS_NAMESPACE"] == METRICS_NAMESPACE
        assert env["POWERTOOLS_LOG_LEVEL"] == "INFO"
        assert env[CHECKPOINT_TABLE.env_var] == {
            "Ref": synth.logical_id(synth.stack.storage.checkpoint_table)
        }
        assert env[CACHE_TABLE.env_var] == {
            "Ref": synth.logical_id(synth.stack.storage.cache_table)
        }
        assert env[MEMORY_TABLE.env_var] == {
            "Ref": synth.logical_id(synth.stack.storage.memory_table)
        }
        for priority, spec in STEP_QUEUES.items():
            assert env[spec.env_var] == {
                "Ref": synth.logical_id(synth.stack.queues.queues[priority])
            }


# --- worker event sources ------------------------------------------------------------------


def test_each_priority_queue_feeds_the_worker_alias_with_its_concurrency(synth: Synth) -> None:
    worker_id, _ = _function_by_handler(synth, STEP_WORKER_FUNCTION.handler)
    alias_id = _alias_of(synth, worker_id)
    mappings = synth.resources("AWS::Lambda::EventSourceMapping").values()
    step_queue_ids = {synth.logical_id(q) for q in synth.stack.queues.queues.values()}
    by_queue = {
        m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]: m["Properties"]
        for m in mappings
        if m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0] in step_queue_ids
    }
    concurrency: dict[str, int] = {}
    for priority, spec in STEP_QUEUES.items():
        props = by_queue[synth.logical_id(synth.stack.queues.queues[priority])]
        assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert props["BatchSize"] == spec.batch_size
        assert props["ScalingConfig"] == {"MaximumConcurrency": spec.max_concurrency}
        assert alias_id in json.dumps(props["FunctionName"])  # the alias, so canaries apply
        assert spec.max_concurrency is not None
        concurrency[priority] = spec.max_concurrency
    assert len(by_queue) == len(STEP_QUEUES)
    # AND besides them, the approval-requests queue feeds the notifier and the webhook
    # deliveries queue the sender: nothing else has an event source
    assert len(list(mappings)) == len(STEP_QUEUES) + 2
    assert concurrency["high"] > concurrency["normal"] > concurrency["low"]


# --- API -----------------------------------------------------------------------------------


def test_api_proxies_every_path_to_the_api_alias(synth: Synth) -> None:
    # (but the three stream routes' POST/GET: tests/infra/test_streaming.py, which also
    # checks every resource they add on the way still reaches the API function)
    api_id, _ = _function_by_handler(synth, API_FUNCTION.handler)
    alias_id = _alias_of(synth, api_id)
    every = synth.resources("AWS::ApiGateway::Method").values()
    methods = [m for m in every if "ResponseTransferMode" not in m["Properties"]["Integration"]]
    assert len(every) - len(methods) == 3
    roots = [m for m in methods if "Fn::GetAtt" in m["Properties"]["ResourceId"]]
    assert len(roots) == 1  # /, and /{proxy+} below
    for method in methods:
        integration = method["Properties"]["Integration"]
        assert method["Properties"]["HttpMethod"] == "ANY"
        assert integration["Type"] == "AWS_PROXY"
        assert {"Ref": alias_id} in integration["Uri"]["Fn::Join"][1]
    synth.template.has_resource_properties(
        "AWS::ApiGateway::RestApi", {"EndpointConfiguration": {"Types": ["REGIONAL"]}}
    )


def test_api_stage_throttles_logs_access_and_traces(synth: Synth) -> None:
    synth.template.has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "MethodSettings": [
                Match.object_like(
                    {
                        "HttpMethod": "*",
                        "ResourcePath": "/*",
                        "ThrottlingRateLimit": API_THROTTLE_RATE_RPS,
                        "ThrottlingBurstLimit": API_THROTTLE_BURST,
                        "DataTraceEnabled": False,
                    }
                )
            ],
            "AccessLogSetting": {
                "DestinationArn": {"Fn::GetAtt": [Match.string_like_regexp("AccessLogs"), "Arn"]},
                "Format": Match.string_like_regexp(r"\$context\.requestId"),
            },
            "TracingEnabled": True,
        },
    )
    synth.template.resource_count_is("AWS::ApiGateway::Account", 1)


# --- housekeeping --------------------------------------------------------------------------


def test_housekeeping_runs_on_a_schedule(synth: Synth) -> None:
    housekeeping_id, _ = _function_by_handler(synth, HOUSEKEEPING_FUNCTION.handler)
    alias_id = _alias_of(synth, housekeeping_id)
    synth.template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "ScheduleExpression": f"rate({HOUSEKEEPING_RATE_MINUTES} minutes)",
            "Targets": [Match.object_like({"Arn": {"Ref": alias_id}})],
        },
    )


# --- observability -------------------------------------------------------------------------


def _alarms(synth: Synth) -> list[dict[str, Any]]:
    return [a["Properties"] for a in synth.resources("AWS::CloudWatch::Alarm").values()]


def _math_alarms(synth: Synth) -> list[dict[str, Any]]:
    return [a for a in _alarms(synth) if "Metrics" in a]


def _metric_of(alarm: dict[str, Any], name: str) -> dict[str, Any]:
    (metric,) = [
        m["MetricStat"]["Metric"]
        for m in alarm["Metrics"]
        if "MetricStat" in m and m["MetricStat"]["Metric"]["MetricName"] == name
    ]
    return dict(metric)


def _expression(alarm: dict[str, Any]) -> str:
    (expression,) = [m["Expression"] for m in alarm["Metrics"] if "Expression" in m]
    return str(expression)


def test_each_dlq_alarms_on_arrivals_not_on_presence(synth: Synth) -> None:
    # GIVEN the alarms that read a DLQ
    dlq_ids = {synth.logical_id(dlq) for dlq in synth.stack.queues.dlqs.values()}
    dlq_ids.add(synth.logical_id(synth.stack.approvals.dlq))
    dlq_ids.add(synth.logical_id(synth.stack.webhooks.dlq))
    alarmed = {}
    for alarm in _math_alarms(synth):
        if "DIFF" not in _expression(alarm):
            continue
        metric = _metric_of(alarm, "ApproximateNumberOfMessagesVisible")
        alarmed[metric["Dimensions"][0]["Value"]["Fn::GetAtt"][0]] = alarm
    # THEN every DLQ has one, on the increase of its visible count: it clears once nothing
    # more arrives, even while the given-up messages stay for someone to redrive
    assert set(alarmed) == dlq_ids
    for alarm in alarmed.values():
        assert _expression(alarm) == "DIFF(FILL(visible, 0))"
        assert alarm["Threshold"] == 1
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    # AND no alarm anywhere fires on a message merely being in a DLQ
    for alarm in _alarms(synth):
        dimensions = json.dumps(alarm.get("Dimensions", []))
        assert not any(dlq in dimensions for dlq in dlq_ids), alarm


def test_a_backlog_alarms_on_waiting_messages_and_their_age_per_priority(synth: Synth) -> None:
    # GIVEN the alarms on the step queues' age of oldest message
    by_queue = {}
    for alarm in _math_alarms(synth):
        if "age" not in _expression(alarm):
            continue
        age = _metric_of(alarm, "ApproximateAgeOfOldestMessage")
        visible = _metric_of(alarm, "ApproximateNumberOfMessagesVisible")
        queue = age["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        assert visible["Dimensions"] == age["Dimensions"]
        by_queue[queue] = alarm
    # THEN each priority has one: messages waiting (the minute's minimum, so in-flight ones
    # do not count) while the oldest passed its priority's threshold, 3 minutes running
    assert set(by_queue) == {synth.logical_id(synth.stack.queues.queues[p]) for p in PRIORITIES}
    for priority in PRIORITIES:
        alarm = by_queue[synth.logical_id(synth.stack.queues.queues[priority])]
        assert _expression(alarm) == (
            f"IF(visible >= 1 AND age > {ALARM_OLDEST_MESSAGE_AGE_S[priority]}, 1, 0)"
        )
        stats = {m["Id"]: m["MetricStat"]["Stat"] for m in alarm["Metrics"] if "MetricStat" in m}
        assert stats == {"visible": "Minimum", "age": "Maximum"}
        assert alarm["EvaluationPeriods"] == 3
    # AND no alarm reads the age alone (it counts in-flight messages: a long healthy step)
    assert not [a for a in _alarms(synth) if a.get("MetricName") == "ApproximateAgeOfOldestMessage"]


def test_worker_errors_and_p95_step_duration_are_alarmed(synth: Synth) -> None:
    worker_id, _ = _function_by_handler(synth, STEP_WORKER_FUNCTION.handler)
    synth.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "MetricName": "Errors",
            "Namespace": "AWS/Lambda",
            "Dimensions": Match.array_with([{"Name": "FunctionName", "Value": {"Ref": worker_id}}]),
            "Threshold": 1,
        },
    )
    synth.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "MetricName": METRIC_STEP_DURATION,
            "Namespace": METRICS_NAMESPACE,
            "ExtendedStatistic": "p95",
            "Dimensions": [{"Name": "service", "Value": SERVICE_NAME}],
            "Threshold": ALARM_STEP_DURATION_P95_MS,
        },
    )


def test_alarms_notify_the_alarm_email_over_a_tls_only_topic(synth: Synth) -> None:
    synth.template.has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": ALARM_EMAIL}
    )
    synth.template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {"PolicyDocument": {"Statement": Match.array_with([_deny_insecure()])}},
    )
    alarms = _alarms(synth)
    assert alarms, "the stack defines alarms"
    assert all(a.get("AlarmActions") for a in alarms)


def test_cloudwatch_may_publish_to_the_alarm_topic_for_this_accounts_alarms_only(
    synth: Synth,
) -> None:
    # GIVEN the alarm topic's policy (which replaces SNS's default policy)
    (policy,) = synth.resources("AWS::SNS::TopicPolicy").values()
    topic_id = synth.logical_id(synth.stack.monitoring.topic)
    assert policy["Properties"]["Topics"] == [{"Ref": topic_id}]
    allows = [
        s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"
    ]
    # THEN it lets CloudWatch publish, scoped by source account and alarm ARN
    (statement,) = allows
    assert statement["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert statement["Action"] == "sns:Publish"
    assert statement["Resource"] == {"Ref": topic_id}
    conditions = statement["Condition"]
    assert conditions["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    source_arn = json.dumps(conditions["ArnLike"]["aws:SourceArn"])
    for part in (":cloudwatch:", "AWS::Region", "AWS::AccountId", ":alarm:*"):
        assert part in source_arn, part


def test_api_5xx_latency_and_throttles_are_alarmed(synth: Synth) -> None:
    rest_api_name = synth.json["Resources"][synth.logical_id(synth.stack.api.rest_api)][
        "Properties"
    ]["Name"]
    api_alarms = {
        a["MetricName"]: a
        for a in _alarms(synth)
        if a.get("Namespace") == "AWS/ApiGateway"
        and {"Name": "ApiName", "Value": rest_api_name} in a["Dimensions"]
    }
    assert set(api_alarms) == {"5XXError", "Latency"}
    assert api_alarms["Latency"]["ExtendedStatistic"] == "p99"
    assert api_alarms["Latency"]["Threshold"] == ALARM_API_LATENCY_P99_MS
    # The alarm sits between the longest legitimate request and the 29 s wall.
    assert API_JOIN_TIMEOUT_S * 1000 < ALARM_API_LATENCY_P99_MS < API_GATEWAY_TIMEOUT_S * 1000
    throttled = {
        json.dumps(a["Dimensions"]) for a in _alarms(synth) if a.get("MetricName") == "Throttles"
    }
    for spec in FUNCTION_SPECS:
        function_id, _ = _function_by_handler(synth, spec.handler)
        assert any(function_id in dims for dims in throttled), spec.logical_id


def test_dashboard_shows_runs_steps_queue_depth_and_step_duration(synth: Synth) -> None:
    (dashboard,) = synth.resources("AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for name in (
        METRIC_STEPS,
        METRIC_STEP_DURATION,
        METRIC_STEP_FAILURES,
        METRIC_QUEUE_WAIT,
        METRIC_API_SERVER_ERRORS,
        "ApproximateNumberOfMessagesVisible",
        "5XXError",
        "Latency",
        "Throttles",
    ):
        assert name in body, name
    for status in RUN_FINAL_STATUSES:
        assert run_status_metric(status) in body, status


# --- releases ------------------------------------------------------------------------------


def _canary_alarms(synth: Synth, spec: Any) -> list[dict[str, Any]]:
    function_id, _ = _function_by_handler(synth, spec.handler)
    alias = synth.json["Resources"][_alias_of(synth, function_id)]
    group_id = alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]["DeploymentGroupName"]["Ref"]
    group = synth.json["Resources"][group_id]["Properties"]
    assert group["DeploymentConfigName"] == "CodeDeployDefault.LambdaCanary10Percent5Minutes"
    assert group["AutoRollbackConfiguration"]["Enabled"] is True
    assert "DEPLOYMENT_STOP_ON_ALARM" in group["AutoRollbackConfiguration"]["Events"]
    return [
        synth.json["Resources"][a["Name"]["Ref"]]["Properties"]
        for a in group["AlarmConfiguration"]["Alarms"]
    ]


def _new_version_of(synth: Synth, spec: Any) -> dict[str, Any]:
    """``Fn::GetAtt`` of the version the alias is being moved to."""
    function_id, _ = _function_by_handler(synth, spec.handler)
    alias = synth.json["Resources"][_alias_of(synth, function_id)]["Properties"]
    return {"Fn::GetAtt": [alias["FunctionVersion"]["Fn::GetAtt"][0], "Version"]}


@pytest.mark.parametrize("spec", FUNCTION_SPECS, ids=lambda s: s.logical_id)
def test_every_canary_rolls_back_on_the_new_versions_lambda_errors(synth: Synth, spec: Any) -> None:
    # GIVEN the alarms CodeDeploy watches while the function's canary runs
    alarms = _canary_alarms(synth, spec)
    function_id, _ = _function_by_handler(synth, spec.handler)
    # THEN one counts Lambda errors of the version being released (not of the alias)
    lambda_errors = [a for a in alarms if a.get("MetricName") == "Errors"]
    assert len(lambda_errors) == 1
    dimensions = {d["Name"]: d["Value"] for d in lambda_errors[0]["Dimensions"]}
    assert dimensions["FunctionName"] == {"Ref": function_id}
    assert dimensions["ExecutedVersion"] == _new_version_of(synth, spec)
    # AND no DLQ alarm is among them: a message reaches a DLQ hours after a 5-minute canary,
    # and one the worker gave up on would block every later release
    for alarm in alarms:
        assert "DIFF" not in json.dumps(alarm), "a DLQ alarm must not roll canaries back"
        assert alarm["Threshold"] == 1
        assert alarm["TreatMissingData"] == "notBreaching"


def test_an_api_canary_rolls_back_on_5xx_answered_by_the_new_version(synth: Synth) -> None:
    # GIVEN the API's canary alarms
    alarms = _canary_alarms(synth, API_FUNCTION)
    # THEN one counts the 5xx the new version answered (Lambda counts them as successes)
    (answered,) = [a for a in alarms if a.get("MetricName") == METRIC_API_SERVER_ERRORS]
    assert answered["Namespace"] == METRICS_NAMESPACE
    assert {d["Name"]: d["Value"] for d in answered["Dimensions"]} == {
        "service": SERVICE_NAME,
        METRIC_VERSION_DIMENSION: _new_version_of(synth, API_FUNCTION),
    }


def test_a_worker_canary_rolls_back_on_failed_step_attempts(synth: Synth) -> None:
    # GIVEN the worker's canary alarms
    alarms = _canary_alarms(synth, STEP_WORKER_FUNCTION)
    # THEN one counts failed step attempts (reported as batch item failures, which Lambda
    # counts as successes, long before any message reaches a DLQ)
    (failures,) = [a for a in alarms if a.get("MetricName") == METRIC_STEP_FAILURES]
    assert failures["Namespace"] == METRICS_NAMESPACE
    assert failures["Statistic"] == "Sum"
    assert failures["Period"] == 60
    # AND only the version being released counts (the old one's failures are not its fault)
    assert {d["Name"]: d["Value"] for d in failures["Dimensions"]} == {
        "service": SERVICE_NAME,
        METRIC_VERSION_DIMENSION: _new_version_of(synth, STEP_WORKER_FUNCTION),
    }


# --- the 29-second wall, concurrency, CORS, logs, data recovery --------------------------


def test_a_runs_wait_fits_under_api_gateways_wall(synth: Synth) -> None:
    # GIVEN the deployed API function: its timeout and the join timeout its settings read
    _, fn = _function_by_handler(synth, API_FUNCTION.handler)
    timeout = fn["Properties"]["Timeout"]
    env = fn["Properties"]["Environment"]["Variables"]
    join = float(env["LAMBDAGRAPH_JOIN_TIMEOUT_S"])
    # THEN a cold wait (init, the run's creation, the join, the final read) ends before the
    # wall, and the function dies before API Gateway gives up on it even after a slow init
    assert API_COLD_START_S + join + API_REQUEST_WORK_S < API_GATEWAY_TIMEOUT_S
    assert join + API_REQUEST_WORK_S <= timeout
    assert API_COLD_START_S + timeout < API_GATEWAY_TIMEOUT_S
    # AND the local stack's default is the same derived value
    assert Settings().join_timeout_s == join == API_JOIN_TIMEOUT_S
    assert float(env["LAMBDAGRAPH_JOIN_POLL_S"]) >= 0.1, "polling is costed in docs/deploy.md"


def test_the_worker_reserves_the_concurrency_its_queues_may_use(synth: Synth) -> None:
    _, fn = _function_by_handler(synth, STEP_WORKER_FUNCTION.handler)
    reserved = fn["Properties"]["ReservedConcurrentExecutions"]
    assert reserved >= sum(spec.max_concurrency or 0 for spec in STEP_QUEUES.values())
    assert reserved == STEP_WORKER_FUNCTION.reserved_concurrency


def test_cors_origins_reach_the_api_function_and_gateway_answers(synth: Synth) -> None:
    # GIVEN a deployment with corsOrigins
    _, fn = _function_by_handler(synth, API_FUNCTION.handler)
    env = fn["Properties"]["Environment"]["Variables"]
    # THEN the function checks them (preflights are answered there, before the API key)
    assert env["LAMBDAGRAPH_CORS_ORIGINS"] == ",".join(CORS_ORIGINS)
    # AND preflights reach it: the ANY methods need no API Gateway key nor authorizer
    for method in synth.resources("AWS::ApiGateway::Method").values():
        assert method["Properties"]["AuthorizationType"] == "NONE"
        assert not method["Properties"].get("ApiKeyRequired", False)
    # AND what API Gateway answers by itself (429, 502, 504) is readable by the page
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]["ResponseParameters"]
        for r in synth.resources("AWS::ApiGateway::GatewayResponse").values()
    }
    assert set(responses) == {"DEFAULT_4XX", "DEFAULT_5XX"}
    for parameters in responses.values():
        assert (
            parameters["gatewayresponse.header.Access-Control-Allow-Origin"]
            == "method.request.header.Origin"
        )


def test_api_gateways_execution_logs_expire_and_go_with_the_stack(synth: Synth) -> None:
    rest_api_id = synth.logical_id(synth.stack.api.rest_api)
    groups = [
        (logical_id, g)
        for logical_id, g in synth.resources("AWS::Logs::LogGroup").items()
        if "API-Gateway-Execution-Logs_" in json.dumps(g["Properties"].get("LogGroupName", ""))
    ]
    assert len(groups) == 1
    logical_id, group = groups[0]
    assert {"Ref": rest_api_id} in group["Properties"]["LogGroupName"]["Fn::Join"][1]
    assert group["Properties"]["RetentionInDays"] == LOG_RETENTION_DAYS
    assert group["DeletionPolicy"] == "Delete"
    # Created before the stage starts logging (API Gateway would create it first otherwise).
    (stage,) = synth.resources("AWS::ApiGateway::Stage").values()
    assert logical_id in stage["DependsOn"]


def test_payload_objects_outlive_point_in_time_recovery(synth: Synth) -> None:
    (bucket,) = synth.resources("AWS::S3::Bucket").values()
    props = bucket["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = {r["Id"]: r for r in props["LifecycleConfiguration"]["Rules"]}
    assert rules["KeepForRecovery"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": PITR_DAYS}
    assert PITR_DAYS >= 35, "DynamoDB point-in-time recovery reaches back 35 days"


def test_outputs_name_the_api_url_tables_and_queues(synth: Synth) -> None:
    outputs = synth.json["Outputs"]
    expected = {"ApiUrl", "CheckpointTableName", "RuntimeTableName", "PayloadBucketName"}
    expected |= {f"{spec.logical_id}Url" for spec in STEP_QUEUES.values()}
    assert expected <= set(outputs)


def test_deployed_step_timings_let_a_lease_outlive_its_invocation(synth: Synth) -> None:
    # GIVEN the deployed worker: its timeout, the lease its settings read, its queues
    _, fn = _function_by_handler(synth, STEP_WORKER_FUNCTION.handler)
    env = fn["Properties"]["Environment"]["Variables"]
    timeout = fn["Properties"]["Timeout"]
    lease = float(env["LAMBDAGRAPH_LEASE_S"])
    queues = synth.resources("AWS::SQS::Queue")
    step_queues = {synth.logical_id(q) for q in synth.stack.queues.queues.values()}
    visibilities = [
        q["Properties"]["VisibilityTimeout"]
        for logical_id, q in queues.items()
        if "RedrivePolicy" in q["Properties"] and logical_id in step_queues
    ]

    # THEN visibility > lease > function timeout, on every step queue
    assert len(visibilities) == len(STEP_QUEUES)
    assert lease > timeout
    assert all(v > lease for v in visibilities)
    # AND the run counts attempts up to the queues' receive count (before any DLQ)
    assert int(env["LAMBDAGRAPH_MAX_STEP_ATTEMPTS"]) <= min(
        s.max_receive_count for s in STEP_QUEUES.values()
    )
    assert float(env["LAMBDAGRAPH_VISIBILITY_TIMEOUT_S"]) == min(visibilities)
