"""What an approval request is, and the value a graph is resumed with."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from functions.errors import InvalidRequestError

APPROVAL_TYPE = "approval"
MAX_TIMEOUT_S = 365 * 24 * 3600  # Standard workflows live at most a year
_EMAIL = re.compile(r"^[^@\s,<>]+@[^@\s,<>]+\.[^@\s,<>]+$")


@dataclass(frozen=True)
class ApprovalRequest:
    interrupt_id: str
    summary: str
    action: Any
    reviewers: tuple[str, ...]
    timeout_s: int
    # Why the graph asks (optional ``why`` or ``reason``), shown to reviewers.
    reason: str = ""


def is_approval(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") == APPROVAL_TYPE


def approval_requests(
    interrupts: dict[str, list[dict[str, Any]]], *, default_reviewers: str, default_timeout_s: int
) -> list[ApprovalRequest]:
    """The approval requests among a run ending's interrupts (API-shaped: ``value``, ``id``).

    Other interrupts stay plain LangGraph interrupts. Reviewers that are not email addresses
    are dropped (a graph's bug must not stop the run's ending); the summary falls back to the
    older ``question`` key.
    """
    found = []
    for items in interrupts.values():
        for item in items:
            value = item.get("value")
            if not isinstance(value, dict) or not is_approval(value):
                continue
            reviewers = value.get("reviewers")
            if isinstance(reviewers, str):
                reviewers = [reviewers]
            if not reviewers:
                reviewers = default_reviewers.split(",")
            emails = tuple(
                dict.fromkeys(
                    r.strip() for r in reviewers if isinstance(r, str) and _EMAIL.match(r.strip())
                )
            )
            timeout = value.get("timeout_seconds")
            if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
                timeout = default_timeout_s
            summary = value.get("summary") or value.get("question") or "Approval requested"
            found.append(
                ApprovalRequest(
                    interrupt_id=str(item.get("id")),
                    summary=str(summary),
                    action=value.get("action"),
                    reviewers=emails,
                    timeout_s=max(1, min(int(timeout), MAX_TIMEOUT_S)),
                    reason=str(value.get("why") or value.get("reason") or ""),
                )
            )
    return found


def approval_id_for(run_id: str, interrupt_id: str) -> str:
    """Derived, so a repeated start (an ending finished twice) names the same approval and
    the same Step Functions execution."""
    return "apr-" + hashlib.sha256(f"{run_id}:{interrupt_id}".encode()).hexdigest()[:32]


DECISIONS = ("approve", "reject")


def parse_decision(decision: Any) -> str:
    if decision not in DECISIONS:
        raise InvalidRequestError("decision must be 'approve' or 'reject'.")
    return str(decision)


def resume_value(
    decision: str, reviewer: str | None, comment: str | None, decided_at: str
) -> dict[str, Any]:
    """The value the graph's ``interrupt()`` returns (ARCHITECTURE.md, "resume value")."""
    return {
        "decision": decision,
        "approved": decision == "approve",
        "reviewer": reviewer,
        "comment": comment,
        "decided_at": decided_at,
    }
