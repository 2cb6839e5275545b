"""Create the shared resources (``functions/resources.py``) on the embedded moto server.

Every spec defined in ``functions.resources`` is picked up by type, so a table, bucket or
queue added there later is created locally without touching this module. The result is the
environment the Lambda functions expect: one variable per resource, named by its spec.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import boto3

from functions import resources
from functions.resources import BucketSpec, QueueSpec, TableSpec, local_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CreatedQueue:
    """A queue created locally, with what the pollers need to read it."""

    spec: QueueSpec
    name: str
    url: str
    arn: str
    dlq_url: str
    dlq_arn: str


@dataclass(frozen=True)
class CreatedResources:
    """What ``create_resources`` made, and the environment that points functions at it."""

    env: dict[str, str]
    queues: dict[str, CreatedQueue]


def iter_specs() -> Iterator[TableSpec | BucketSpec | QueueSpec]:
    """Every resource spec in ``functions.resources``, also those inside dicts (``STEP_QUEUES``)."""
    seen: set[tuple[type, str]] = set()
    for value in vars(resources).values():
        candidates = value.values() if isinstance(value, dict) else (value,)
        for spec in candidates:
            if not isinstance(spec, TableSpec | BucketSpec | QueueSpec):
                continue
            key = (type(spec), spec.logical_id)
            if key in seen:
                continue
            seen.add(key)
            yield spec


def dlq_name(spec: QueueSpec) -> str:
    return f"{local_name(spec.logical_id)}-dlq"


def create_resources(
    endpoint_url: str, region: str, *, visibility_timeouts: Mapping[str, int] | None = None
) -> CreatedResources:
    """Create every table, bucket and queue (each with its DLQ) on moto; idempotent.

    ``visibility_timeouts`` (by logical id) replaces a queue spec's visibility timeout: the
    local stack's time scale applies to the step queues.
    """
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region
    )
    dynamodb = session.client("dynamodb", endpoint_url=endpoint_url)
    s3 = session.client("s3", endpoint_url=endpoint_url)
    sqs = session.client("sqs", endpoint_url=endpoint_url)
    env: dict[str, str] = {}
    queues: dict[str, CreatedQueue] = {}
    for spec in iter_specs():
        if isinstance(spec, TableSpec):
            name = _create_table(dynamodb, spec)
            _set_env(env, spec.env_var, name)
        elif isinstance(spec, BucketSpec):
            name = _create_bucket(s3, spec, region)
            _set_env(env, spec.env_var, name)
        else:
            visibility = (visibility_timeouts or {}).get(spec.logical_id)
            queue = _create_queue(sqs, spec, visibility)
            queues[queue.name] = queue
            _set_env(env, spec.env_var, queue.url)
            if spec.dlq_env_var:
                _set_env(env, spec.dlq_env_var, queue.dlq_url)
    return CreatedResources(env=env, queues=queues)


def _set_env(env: dict[str, str], name: str, value: str) -> None:
    # A spec without an env var is still created; functions just cannot find it by name.
    if name:
        env[name] = value


def _create_table(dynamodb: Any, spec: TableSpec) -> str:
    name = local_name(spec.logical_id)
    request = spec.create_table_request(name)
    try:
        dynamodb.create_table(**request)
    except dynamodb.exceptions.ResourceInUseException:
        log.debug("table %s exists", name)
    if spec.ttl_attribute:
        dynamodb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl_attribute},
        )
    return name


def _create_bucket(s3: Any, spec: BucketSpec, region: str) -> str:
    name = local_name(spec.logical_id)
    # us-east-1 is the one region that rejects an explicit location constraint.
    config = (
        {}
        if region == "us-east-1"
        else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    )
    try:
        s3.create_bucket(Bucket=name, **config)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        log.debug("bucket %s exists", name)
    return name


def _create_queue(sqs: Any, spec: QueueSpec, visibility_timeout_s: int | None) -> CreatedQueue:
    retention = str(spec.retention_s)
    dlq_url = _fresh_queue(sqs, dlq_name(spec), {"MessageRetentionPeriod": retention})
    dlq_arn = _queue_arn(sqs, dlq_url)
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": spec.max_receive_count}
    name = local_name(spec.logical_id)
    visibility = spec.visibility_timeout_s if visibility_timeout_s is None else visibility_timeout_s
    url = _fresh_queue(
        sqs,
        name,
        {
            "VisibilityTimeout": str(visibility),
            "MessageRetentionPeriod": retention,
            "RedrivePolicy": json.dumps(redrive),
        },
    )
    return CreatedQueue(
        spec=spec, name=name, url=url, arn=_queue_arn(sqs, url), dlq_url=dlq_url, dlq_arn=dlq_arn
    )


def _fresh_queue(sqs: Any, name: str, attributes: dict[str, str]) -> str:
    """An empty queue ``name`` with ``attributes``.

    moto keeps one backend per process, so a stack started after another in the same process
    (tests, benchmarks) finds the earlier stack's queues, with its attributes (the time scale
    may differ) and its messages. The queue is made anew instead: moto, unlike SQS, allows
    that at once (PurgeQueue it allows once a minute).
    """
    try:
        url = str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
    except sqs.exceptions.QueueDoesNotExist:
        url = ""
    if url:
        log.debug("queue %s exists: making it anew", name)
        sqs.delete_queue(QueueUrl=url)
    return str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])


def _queue_arn(sqs: Any, url: str) -> str:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attributes["Attributes"]["QueueArn"])
