"""Human approval end to end on moto, with the state machine definition CDK deploys: a run
stops for approval, the state machine hands its token to the notifier, the reviewer gets an
email, follows its link over real HTTP, decides, and the thread resumes by itself.
"""

from __future__ import annotations

import re
from typing import Any

from tests.conftest import register_secret
from tests.integration.approval_stack import ApprovalStack, approval_stack, link_path

__all__ = ["approval_stack"]

REFUND = {"messages": [{"role": "user", "content": "I was charged twice, please refund $49"}]}
LINK = re.compile(r"http://[^\s\"<>]+/approvals/[^\s\"<>?]+\?token=[^\s\"<>]+")


def _ask_for_refund(stack: ApprovalStack) -> tuple[str, dict[str, Any]]:
    """A run that stops for approval; (thread id, the approval record as the API lists it)."""
    thread_id = stack.create_thread()
    stack.start_run(thread_id, input=REFUND)
    stack.pump()
    approvals = stack.api("GET", f"/threads/{thread_id}/approvals")
    assert approvals.status == 200, approvals.body
    assert len(approvals.body) == 1
    return thread_id, approvals.body[0]


def _link_from_email(stack: ApprovalStack, reviewer: str | None = None) -> str:
    emails = stack.emails_to(reviewer or stack.reviewer)
    assert emails, "no email to the reviewer"
    found = LINK.findall(emails[-1]["text"])
    assert found, emails[-1]
    assert found[0] in emails[-1]["html"].replace("&amp;", "&")
    url = found[0]
    token = url.split("token=", 1)[1]
    register_secret(token, "approval link token")
    return url


def _last_reply(stack: ApprovalStack, thread_id: str) -> str:
    state = stack.api("GET", f"/threads/{thread_id}/state")
    return str(state.body["values"]["messages"][-1]["content"])


def test_approve_through_the_emailed_link_resumes_the_run(approval_stack: ApprovalStack) -> None:
    stack = approval_stack
    # GIVEN a refund request that stopped for approval
    thread_id, approval = _ask_for_refund(stack)
    assert approval["status"] == "pending"
    thread = stack.api("GET", f"/threads/{thread_id}")
    assert thread.body["status"] == "interrupted"
    # WHEN the state machine hands its token to the notifier
    stack.pump_approvals("request")
    # THEN the reviewer got one email with a signed link
    url = _link_from_email(stack)
    # WHEN the reviewer opens the link (twice, as a mail scanner would first)
    for _ in range(2):
        page = stack.open(url)
        assert page.status == 200, page.body
        assert "Refund $49 to the customer" in page.body
        assert 'value="approve"' in page.body
    # THEN opening it changed nothing
    assert stack.api("GET", f"/threads/{thread_id}/approvals").body[0]["status"] == "pending"
    # WHEN they approve with a comment
    token = url.split("token=", 1)[1]
    from urllib.parse import unquote

    decided = stack.open(
        link_path(url).split("?")[0],
        data={"token": unquote(token), "decision": "approve", "comment": "duplicate charge"},
    )
    assert decided.status == 200, decided.body
    assert "approved" in decided.body
    # THEN the state machine hands back a resume and the thread resumes to success
    stack.pump_approvals("resume")
    stack.pump()
    assert _last_reply(stack, thread_id) == "Your refund of $49 has been issued."
    runs = stack.api("GET", f"/threads/{thread_id}/runs").body
    assert [r["status"] for r in runs] == ["success", "success"]
    assert stack.api("GET", f"/threads/{thread_id}").body["status"] == "idle"
    record = stack.api("GET", f"/threads/{thread_id}/approvals").body[0]
    assert record["status"] == "approved"
    assert record["decision"]["reviewer"] == stack.reviewer
    assert record["decision"]["comment"] == "duplicate charge"
    assert record["source"] == "link"
    stack.wait_execution(approval["approval_id"], "SUCCEEDED")
    # AND a second decision is refused with the recorded one
    again = stack.open(url.split("?")[0], data={"token": unquote(token), "decision": "reject"})
    assert again.status == 409
    assert "already decided" in again.body
