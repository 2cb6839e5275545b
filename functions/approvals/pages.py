"""The reviewer's page: ``GET /approvals/{id}?token=...`` shows the request and changes
nothing (mail scanners open links); ``POST /approvals/{id}`` (form fields or JSON: ``token``,
``decision`` = approve|reject, optional ``comment``) settles it once.

Authorised by the link's token alone (no API key). Browsers get HTML; a client sending
``Accept: application/json`` gets JSON (``{"detail": ...}`` on errors, as the API).
"""

from __future__ import annotations

import json
import re
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from aws_lambda_powertools import Logger

from functions.api_body import BodyError, body_text, parse_json
from functions.approvals.emails import action_text, expires_text
from functions.approvals.records import ApprovalRecord
from functions.approvals.service import AlreadyDecided
from functions.errors import InfrastructureError, LambdagraphError

if TYPE_CHECKING:
    from functions.approvals.service import ApprovalService

logger = Logger(child=True)

PAGE_PATH = re.compile(r"^/approvals/([^/]+)$")
MAX_COMMENT = 2000


def is_page_path(path: str) -> bool:
    return PAGE_PATH.match(path) is not None


def _header(event: dict[str, Any], name: str) -> str:
    for key, value in (event.get("headers") or {}).items():
        if key.lower() == name:
            return str(value)
    return ""


def _wants_json(event: dict[str, Any]) -> bool:
    accept = _header(event, "accept")
    return "application/json" in accept and "text/html" not in accept


def _response(status: int, body: str, content_type: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {
            "Content-Type": content_type,
            # The token is in the URL: keep it out of caches and other sites' Referer.
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "form-action 'self'; frame-ancestors 'none'",
        },
        "multiValueHeaders": {},
        "body": body,
        "isBase64Encoded": False,
    }


def _form(event: dict[str, Any]) -> dict[str, Any]:
    text = body_text(event) or ""
    content_type = _header(event, "content-type")
    if "json" in content_type or text.lstrip().startswith("{"):
        value = parse_json(text)
        if not isinstance(value, dict):
            raise BodyError("Send a JSON object with token and decision.", "json_invalid")
        return value
    return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}


def handle(event: dict[str, Any], service: ApprovalService) -> dict[str, Any]:
    path = event.get("path") or ""
    match = PAGE_PATH.match(path)
    approval_id = unquote(match.group(1)) if match else ""
    method = str(event.get("httpMethod") or "GET").upper()
    wants_json = _wants_json(event)
    query = event.get("queryStringParameters") or {}
    try:
        if method == "GET":
            record, reviewer = service.view(approval_id, query.get("token"))
            if wants_json:
                return _json(200, {**record.to_api(), "reviewer": reviewer})
            return _html(200, _page(record, reviewer, str(query.get("token"))))
        if method != "POST":
            return _error(405, "Use GET to view an approval request, POST to decide.", wants_json)
        form = _form(event)
        comment = form.get("comment")
        if comment is not None and not isinstance(comment, str):
            return _error(422, "comment must be text.", wants_json)
        if comment and len(comment) > MAX_COMMENT:
            return _error(422, f"comment is longer than {MAX_COMMENT} characters.", wants_json)
        token = form.get("token") or query.get("token")
        record = service.decide(approval_id, token, form.get("decision"), comment)
        if wants_json:
            return _json(200, record.to_api())
        return _html(200, _outcome(record, "Thank you: your decision is recorded."))
    except AlreadyDecided as exc:
        if wants_json:
            return _json(409, {"detail": str(exc), "approval": exc.record.to_api()})
        return _html(409, _outcome(exc.record, str(exc)))
    except BodyError as exc:
        return _error(422, str(exc), wants_json)
    except LambdagraphError as exc:
        return _error(exc.status_code, str(exc), wants_json)
    except InfrastructureError:
        logger.exception("approval page unavailable")
        return _error(503, "Temporarily unavailable; retry shortly.", wants_json)


def _json(status: int, body: Any) -> dict[str, Any]:
    return _response(status, json.dumps(body, separators=(",", ":")), "application/json")


def _html(status: int, body: str) -> dict[str, Any]:
    return _response(status, body, "text/html; charset=utf-8")


def _error(status: int, message: str, wants_json: bool) -> dict[str, Any]:
    if wants_json:
        return _json(status, {"detail": message})
    return _html(status, _layout("Approval request", f'<p role="alert">{escape(message)}</p>'))


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem;
  line-height: 1.5; color: #1b1b1b; }
pre { background: #f4f4f4; padding: .75rem; overflow-x: auto; }
textarea { width: 100%; min-height: 5rem; font: inherit; }
button { font: inherit; padding: .5rem 1.25rem; margin-right: .75rem; border-radius: .3rem;
  border: 2px solid #1b1b1b; cursor: pointer; }
button.approve { background: #0b6e2f; color: #fff; border-color: #0b6e2f; }
button.reject { background: #fff; color: #a4161a; border-color: #a4161a; }
button:focus { outline: 3px solid #f5a623; outline-offset: 2px; }
"""


def _layout(title: str, content: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main><h1>{escape(title)}</h1>{content}</main></body></html>\n"
    )


def _details(record: ApprovalRecord) -> str:
    why = f"<p><strong>Why:</strong> {escape(record.reason)}</p>" if record.reason else ""
    return (
        f'<p><strong>What is asked:</strong> <span id="summary">{escape(record.summary)}</span></p>'
        f"{why}"
        f"<p><strong>Proposed action:</strong></p><pre>{escape(action_text(record.action))}</pre>"
        f"<p>Run <code>{escape(record.run_id)}</code> on thread "
        f"<code>{escape(record.thread_id)}</code>.</p>"
    )


def _page(record: ApprovalRecord, reviewer: str, token: str) -> str:
    form = (
        '<form method="post">'
        f'<input type="hidden" name="token" value="{escape(token, quote=True)}">'
        '<p><label for="comment">Comment (optional)</label><br>'
        f'<textarea id="comment" name="comment" maxlength="{MAX_COMMENT}"></textarea></p>'
        '<p><button class="approve" type="submit" name="decision" value="approve">Approve'
        '</button><button class="reject" type="submit" name="decision" value="reject">Reject'
        "</button></p></form>"
    )
    content = (
        _details(record)
        + f"<p>Reviewing as <strong>{escape(reviewer)}</strong>; the request expires "
        f"{escape(expires_text(record))}.</p>" + form
    )
    return _layout("Approval needed", content)


def _outcome(record: ApprovalRecord, message: str) -> str:
    decision = record.decision or {}
    by = decision.get("reviewer") or ("the API" if record.source == "api" else "nobody")
    content = (
        f'<p role="status" id="outcome">{escape(message)}</p>'
        f'<p>Decision: <strong id="decision">{escape(record.status)}</strong> by '
        f"{escape(str(by))} at {escape(str(decision.get('decided_at', '')))}.</p>"
    )
    if decision.get("comment"):
        content += f"<p>Comment: {escape(str(decision['comment']))}</p>"
    return _layout("Approval request", content + _details(record))
