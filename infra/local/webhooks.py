"""The local stack's webhook parts: the lambdagraph bus (with its archive), the rule routing
run-ended events of runs with a ``webhook`` to the deliveries queue, and the signing secret.

moto's EventBridge delivers to SQS targets and applies the rule's pattern, so the path is the
deployed one: PutEvents -> rule -> deliveries queue -> (the local poller) -> the sender.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import boto3

from functions.resources import (
    EVENT_ARCHIVE_RETENTION_DAYS,
    EVENT_BUS_ENV,
    WEBHOOK_QUEUE,
    WEBHOOK_RULE_PATTERN,
    local_name,
)
from functions.settings import Settings
from functions.webhooks.sender import retry_delays
from functions.webhooks.signing import new_secret, parse_secrets

log = logging.getLogger(__name__)

BUS_NAME = local_name("Events")
RULE_NAME = local_name("WebhookDeliveries")
SECRET_ENV = "LAMBDAGRAPH_WEBHOOK_SECRET"
ALLOW_PRIVATE_ENV = "LAMBDAGRAPH_WEBHOOK_ALLOW_PRIVATE"


def create_webhook_routing(endpoint_url: str, region: str, queue_arn: str) -> dict[str, str]:
    """Bus, archive, rule and target on moto (idempotent); the environment naming the bus."""
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region
    )
    events: Any = session.client("events", endpoint_url=endpoint_url)
    try:
        bus_arn = events.create_event_bus(Name=BUS_NAME)["EventBusArn"]
    except events.exceptions.ResourceAlreadyExistsException:
        bus_arn = events.describe_event_bus(Name=BUS_NAME)["Arn"]
    try:
        events.create_archive(
            ArchiveName=f"{BUS_NAME}-archive",
            EventSourceArn=bus_arn,
            RetentionDays=EVENT_ARCHIVE_RETENTION_DAYS,
        )
    except events.exceptions.ResourceAlreadyExistsException:
        log.debug("archive of %s exists", BUS_NAME)
    events.put_rule(
        Name=RULE_NAME,
        EventBusName=BUS_NAME,
        EventPattern=json.dumps(WEBHOOK_RULE_PATTERN),
        State="ENABLED",
    )
    events.put_targets(
        Rule=RULE_NAME,
        EventBusName=BUS_NAME,
        Targets=[{"Id": WEBHOOK_QUEUE.logical_id, "Arn": queue_arn}],
    )
    return {EVENT_BUS_ENV: BUS_NAME}


def webhook_env() -> dict[str, str]:
    """Signing secret (generated and printed when unset), http and private targets allowed
    unless ``LAMBDAGRAPH_WEBHOOK_ALLOW_PRIVATE=false``."""
    env: dict[str, str] = {"LAMBDAGRAPH_WEBHOOK_REQUIRE_HTTPS": "false"}
    if not os.environ.get(ALLOW_PRIVATE_ENV):
        env[ALLOW_PRIVATE_ENV] = "true"
    # A bad delay list stops the stack at start-up, not at every delivery.
    retry_delays(Settings())
    configured = os.environ.get(SECRET_ENV, "")
    if configured:
        parse_secrets(configured)  # a bad secret stops the stack at start-up, not at delivery
    else:
        secret = new_secret()
        env[SECRET_ENV] = secret
        # Printed on purpose: the developer's receiver needs it to verify signatures.
        print(
            f"webhooks: no {SECRET_ENV} set; signing with a new secret for this run:\n"
            f"  {SECRET_ENV}={secret}",
            flush=True,
        )
    return env
