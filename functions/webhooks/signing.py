"""Standard Webhooks signatures (``standardwebhooks``), one per active secret.

Secrets are ``whsec_<base64>``, comma-separated: locally ``LAMBDAGRAPH_WEBHOOK_SECRET``; on
AWS the Secrets Manager secret ``LAMBDAGRAPH_WEBHOOK_SECRET_ARN`` (same format, or a JSON
list), read once per container. During a rotation both the old and the new secret are
active: each delivery then carries both signatures and a receiver holding either verifies.
"""

from __future__ import annotations

import base64
import json
import secrets
from datetime import UTC, datetime
from functools import cache
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from standardwebhooks.webhooks import Webhook

from functions import aws
from functions.errors import InfrastructureError
from functions.settings import Settings

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh signing secret (24 random bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode("ascii")


def parse_secrets(text: str) -> tuple[str, ...]:
    """The secrets in ``text``; ValueError if one is bad. Accepted: comma-separated
    ``whsec_...`` values, a JSON list of them, or a JSON object with ``secrets`` (a list)
    or ``webhook_secret`` (one; ``whsec_`` is added when missing: the form the stack's
    generated Secrets Manager secret has)."""
    text = text.strip()
    items: list[Any]
    if text.startswith("{"):
        data = json.loads(text)
        items = list(data.get("secrets") or [])
        if data.get("webhook_secret"):
            one = str(data["webhook_secret"])
            items.append(one if one.startswith(SECRET_PREFIX) else SECRET_PREFIX + one)
    elif text.startswith("["):
        items = list(json.loads(text))
    else:
        items = text.split(",")
    found = tuple(str(item).strip() for item in items if str(item).strip())
    for item in found:
        if not item.startswith(SECRET_PREFIX):
            raise ValueError(f"a webhook secret must start with {SECRET_PREFIX!r}")
        Webhook(item)  # raises on bad base64
    return found


@cache
def _secret_from_manager(arn: str) -> str:
    try:
        response = aws.secrets_client().get_secret_value(SecretId=arn)
    except (BotoCoreError, ClientError) as exc:
        raise InfrastructureError(f"reading the webhook secret failed: {exc}") from exc
    return str(response.get("SecretString") or "")


def active_secrets(settings: Settings) -> tuple[str, ...]:
    text = settings.webhook_secret
    if not text and settings.webhook_secret_arn:
        text = _secret_from_manager(settings.webhook_secret_arn)
    found = parse_secrets(text) if text else ()
    if not found:
        raise InfrastructureError(
            "no webhook signing secret: set LAMBDAGRAPH_WEBHOOK_SECRET (whsec_...) or "
            "LAMBDAGRAPH_WEBHOOK_SECRET_ARN"
        )
    return found


def signed_headers(
    webhook_id: str, body: str, secrets_: tuple[str, ...], at: datetime | None = None
) -> dict[str, str]:
    """``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` (space-separated, one
    ``v1,<sig>`` per secret) for ``body``."""
    at = at or datetime.now(UTC)
    signatures = [Webhook(s).sign(webhook_id, at, body) for s in secrets_]
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": " ".join(signatures),
    }
