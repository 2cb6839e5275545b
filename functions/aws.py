"""boto3 clients, created once per process (cold start) and reused across invocations.

``AWS_ENDPOINT_URL`` (read by boto3 itself) points them at moto locally. Only the data-access
modules (``store``, ``queues``, ``cache``) use these.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config

# Standard retry mode backs off on throttling before we give up and let SQS retry the message.
_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=20
)


@cache
def dynamodb_resource() -> Any:
    return boto3.resource("dynamodb", config=_CONFIG)


@cache
def dynamodb_client() -> Any:
    """Thread-safe (unlike the resource): the node cache writes from LangGraph's threads."""
    return boto3.client("dynamodb", config=_CONFIG)


@cache
def sqs_client() -> Any:
    return boto3.client("sqs", config=_CONFIG)


def table(name: str) -> Any:
    return dynamodb_resource().Table(name)


@cache
def events_client() -> Any:
    return boto3.client("events", config=_CONFIG)


@cache
def secrets_client() -> Any:
    return boto3.client("secretsmanager", config=_CONFIG)


@cache
def s3_client() -> Any:
    return boto3.client("s3", config=_CONFIG)
