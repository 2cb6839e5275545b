"""The reviewer's email: subject, plain text and HTML (every value escaped)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from html import escape
from typing import Any

from functions.approvals.records import ApprovalRecord


def action_text(action: Any) -> str:
    if isinstance(action, str):
        return action
    return json.dumps(action, indent=2, ensure_ascii=False, sort_keys=True)


def expires_text(record: ApprovalRecord) -> str:
    return datetime.fromtimestamp(record.expires_at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def render_email(record: ApprovalRecord, link: str) -> tuple[str, str, str]:
    subject = f"Approval needed: {record.summary}"[:200]
    action = action_text(record.action)
    why = f"Why: {record.reason}\n\n" if record.reason else ""
    why_html = f"<p><strong>Why:</strong> {escape(record.reason)}</p>\n" if record.reason else ""
    text = (
        f"An agent asks for your approval.\n\n"
        f"What is asked: {record.summary}\n\n"
        f"{why}"
        f"Proposed action:\n{action}\n\n"
        f"Run {record.run_id} on thread {record.thread_id} (graph {record.assistant_id}).\n\n"
        f"Approve or reject it here (the link expires {expires_text(record)}):\n{link}\n\n"
        f"Opening the link changes nothing; only the Approve or Reject button does.\n"
    )
    html = f"""<!doctype html>
<html lang="en"><body style="font-family: sans-serif; max-width: 40em">
<h1 style="font-size: 1.3em">Approval needed</h1>
<p><strong>What is asked:</strong> {escape(record.summary)}</p>
{why_html}<p><strong>Proposed action:</strong></p>
<pre style="background: #f4f4f4; padding: .5em">{escape(action)}</pre>
<p>Run <code>{escape(record.run_id)}</code> on thread <code>{escape(record.thread_id)}</code>
(graph <code>{escape(record.assistant_id)}</code>).</p>
<p><a href="{escape(link, quote=True)}">Review and decide</a> (the link expires
{escape(expires_text(record))}).</p>
<p style="color: #555">Opening the link changes nothing; only the Approve or Reject button does.</p>
</body></html>
"""
    return subject, text, html
