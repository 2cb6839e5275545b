"""Mail the local stack's moto accepted through SES, as ``GET /_local/emails`` shows it.

moto keeps what SES was asked to send in its in-process backend; each message (MIME, as the
approval notifier sends it) becomes ``{"to", "from", "subject", "text", "html", "sent_at"}``,
oldest first. Nothing is delivered anywhere.
"""

from __future__ import annotations

from email import message_from_bytes, message_from_string
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import Any


def _part(message: Message, subtype: str) -> str | None:
    for part in message.walk():
        if part.get_content_type() == f"text/{subtype}":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                charset = part.get_content_charset() or "utf-8"
                return payload.decode(charset, errors="replace")
    return None


def _sent_at(message: Message) -> str | None:
    date = message.get("Date")
    if not date:
        return None
    try:
        return parsedate_to_datetime(date).isoformat()
    except (TypeError, ValueError):
        return None


def sent_emails() -> list[dict[str, Any]]:
    """Every message SES accepted in this process's moto, in every account and region."""
    from moto.ses.models import ses_backends

    found: list[dict[str, Any]] = []
    for account in list(ses_backends.keys()):
        for region in list(ses_backends[account].keys()):
            backend = ses_backends[account][region]
            for sent in list(backend.sent_messages):
                raw = getattr(sent, "raw_data", None)
                if raw is None:
                    destinations = getattr(sent, "destinations", {}) or {}
                    found.append(
                        {
                            "to": list(destinations.get("ToAddresses", [])),
                            "from": sent.source,
                            "subject": getattr(sent, "subject", None),
                            "text": getattr(sent, "body", None),
                            "html": None,
                            "sent_at": None,
                        }
                    )
                    continue
                message = (
                    message_from_bytes(raw) if isinstance(raw, bytes) else message_from_string(raw)
                )
                found.append(
                    {
                        "to": list(sent.destinations or [message.get("To", "")]),
                        "from": sent.source,
                        "subject": str(message.get("Subject", "")),
                        "text": _part(message, "plain"),
                        "html": _part(message, "html"),
                        "sent_at": _sent_at(message),
                    }
                )
    return found
