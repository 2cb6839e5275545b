"""Human approval end to end on moto, with the state machine definition CDK deploys: a run
stops for approval, the state machine hands its token to the notifier, the reviewer gets an
email, follows its link over real HTTP, decides, and the thread resumes by itself.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime
from typing import Any

from tests.conftest import register_secret
from tests.integration.approval_stack import ApprovalStack, approval_stack, link_path
from tests.integration.conftest import KEY_B

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
    # What is asked, why, the run and thread, in both parts.
    for part in (emails[-1]["text"], emails[-1]["html"]):
        assert "Refund $49 to the customer" in part
        assert "I was charged twice" in part
    token = url.split("token=", 1)[1]
    register_secret(token, "approval link token")
    from urllib.parse import unquote

    register_secret(unquote(token), "approval link token")
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
    # THEN the reviewer got one email with a signed link, naming the run and the thread
    url = _link_from_email(stack)
    (email,) = stack.emails_to(stack.reviewer)
    for part in (email["text"], email["html"]):
        assert approval["run_id"] in part
        assert thread_id in part
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
    # AND the new run resumed the interrupt with Command(resume), the value as ARCHITECTURE.md
    (resumed,) = [r for r in runs if r["run_id"] != approval["run_id"]]
    assert resumed["metadata"]["approval_id"] == approval["approval_id"]
    value = resumed["kwargs"]["command"]["resume"][approval["interrupt_id"]]
    assert set(value) == {"decision", "approved", "reviewer", "comment", "decided_at"}
    assert value["decision"] == "approve"
    assert value["approved"] is True
    assert (value["reviewer"], value["comment"]) == (stack.reviewer, "duplicate charge")
    datetime.fromisoformat(value["decided_at"])
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


def _decide(stack: ApprovalStack, url: str, decision: str, **extra: Any) -> Any:
    from urllib.parse import unquote

    token = unquote(url.split("token=", 1)[1])
    return stack.open(url.split("?")[0], data={"token": token, "decision": decision, **extra})


def test_reject_resumes_with_a_follow_up(approval_stack: ApprovalStack) -> None:
    stack = approval_stack
    # GIVEN a refund waiting for approval, its email sent
    thread_id, _approval = _ask_for_refund(stack)
    stack.pump_approvals("request")
    url = _link_from_email(stack)
    # WHEN the reviewer rejects (a JSON client this time)
    from urllib.parse import unquote

    reply = stack.open(
        url.split("?")[0],
        data={"token": unquote(url.split("token=", 1)[1]), "decision": "reject"},
        accept="application/json",
        json_body=True,
    )
    # THEN the answer is JSON and the thread resumes with the rejection
    assert reply.status == 200, reply.body
    assert reply.json()["status"] == "rejected"
    assert reply.json()["decision"]["approved"] is False
    stack.pump_approvals("resume")
    stack.pump()
    assert "follow up" in _last_reply(stack, thread_id)
    assert stack.api("GET", f"/threads/{thread_id}/approvals").body[0]["status"] == "rejected"


def test_expiry_resumes_with_an_expired_decision(approval_stack: ApprovalStack) -> None:
    stack = approval_stack
    # GIVEN approvals that expire after two seconds
    stack.settings.approval_timeout_s = 2
    thread_id, _approval = _ask_for_refund(stack)
    stack.pump_approvals("request")
    url = _link_from_email(stack)
    # WHEN nobody decides in time
    resumed = stack.pump_approvals("resume", wait_s=20)
    # THEN the state machine resumes the run with decision "expired"
    assert resumed[0]["decision"]["decision"] == "expired"
    stack.pump()
    assert "follow up" in _last_reply(stack, thread_id)
    record = stack.api("GET", f"/threads/{thread_id}/approvals").body[0]
    assert record["status"] == "expired"
    assert record["source"] == "timeout"
    assert record["decision"]["approved"] is False
    # AND the link now answers 410 Gone, changing nothing
    page = stack.open(url)
    assert page.status == 410
    assert "expired" in page.body
    assert _decide(stack, url, "approve").status == 410
    runs = stack.api("GET", f"/threads/{thread_id}/runs").body
    assert len(runs) == 2


def test_forged_tampered_and_cross_approval_tokens_are_refused(
    approval_stack: ApprovalStack,
) -> None:
    stack = approval_stack
    # GIVEN two approvals waiting, each with its link
    _, first = _ask_for_refund(stack)
    stack.pump_approvals("request")
    url = _link_from_email(stack)
    _, second = _ask_for_refund(stack)
    from urllib.parse import unquote

    token = unquote(url.split("token=", 1)[1])
    version, payload, mac = token.split(".")
    tampered_mac = f"{version}.{payload}.{mac[:-2]}{'AA' if mac[-2:] != 'AA' else 'BB'}"

    forged_payload = (
        base64.urlsafe_b64encode(
            json.dumps(
                {"a": first["approval_id"], "r": "evil@example.com", "x": 9999999999}
            ).encode()
        )
        .decode()
        .rstrip("=")
    )
    forged = f"{version}.{forged_payload}.{mac}"
    base = f"/approvals/{first['approval_id']}"
    cases = {
        "no token": (base, 403),
        "garbage": (f"{base}?token=garbage", 403),
        "tampered signature": (f"{base}?token={tampered_mac}", 403),
        "forged claims": (f"{base}?token={forged}", 403),
        "other approval's token": (f"/approvals/{second['approval_id']}?token={token}", 403),
    }
    for name, (path, status) in cases.items():
        # WHEN the page is opened or posted with it
        page = stack.open(path)
        decided = stack.open(
            path.split("?")[0], data={"token": path.partition("token=")[2], "decision": "approve"}
        )
        # THEN it is refused with a clear message, in HTML and JSON
        assert page.status == status, (name, page.body)
        assert decided.status == status, (name, decided.body)
        assert "token" in page.body.lower()
        as_json = stack.open(path, accept="application/json")
        assert as_json.status == status
        assert "token" in as_json.json()["detail"]
    # AND nothing changed
    listed = stack.api("GET", "/approvals", query={"status": "pending"}).body
    assert {first["approval_id"], second["approval_id"]} <= {a["approval_id"] for a in listed}
    assert all(a["status"] == "pending" for a in listed)
    # AND a bad decision is a 422
    assert _decide(stack, url, "maybe").status == 422


def test_duplicate_token_message_sends_one_email(approval_stack: ApprovalStack) -> None:
    stack = approval_stack
    # GIVEN the state machine's token message
    _, approval = _ask_for_refund(stack)
    messages = stack.approval_messages()
    assert len(messages) == 1
    # WHEN it is delivered twice (SQS is at-least-once)
    stack.sqs.send_message(QueueUrl=stack.approval_queue_url, MessageBody=messages[0]["Body"])
    stack.deliver_approvals(messages)
    stack.deliver_approvals(stack.approval_messages())
    # THEN the reviewer has one email
    assert len(stack.emails_to(stack.reviewer)) == 1
    # AND deciding settles it once: one resume, one resumed run
    url = _link_from_email(stack)
    assert _decide(stack, url, "approve").status == 200
    stack.pump_approvals("resume")
    stack.pump()
    runs = stack.api("GET", f"/threads/{approval['thread_id']}/runs").body
    assert len(runs) == 2


def test_another_tenant_sees_no_approvals(approval_stack: ApprovalStack) -> None:
    stack = approval_stack
    thread_id, approval = _ask_for_refund(stack)
    # WHEN tenant B lists them
    assert stack.api("GET", f"/threads/{thread_id}/approvals", api_key=KEY_B).status == 404
    pending = stack.api("GET", "/approvals", query={"status": "pending"}, api_key=KEY_B)
    # THEN none of A's show
    assert pending.status == 200
    assert approval["approval_id"] not in {a["approval_id"] for a in pending.body}
    # AND listing needs an API key (the page alone is authorised by its token)
    assert stack.api("GET", "/approvals", api_key=None).status == 401
    assert stack.api("GET", "/approvals", query={"status": "bogus"}).status == 422


def test_resume_through_the_api_settles_the_approval(approval_stack: ApprovalStack) -> None:
    stack = approval_stack
    # GIVEN a refund waiting for approval, its email sent
    thread_id, approval = _ask_for_refund(stack)
    stack.pump_approvals("request")
    url = _link_from_email(stack)
    # WHEN a client resumes the thread through the API
    stack.start_run(thread_id, command={"resume": {"decision": "approve", "approved": True}})
    stack.pump()
    # THEN the run completes, the approval is settled by the API and its execution completed
    assert _last_reply(stack, thread_id) == "Your refund of $49 has been issued."
    record = stack.api("GET", f"/threads/{thread_id}/approvals").body[0]
    assert record["status"] == "approved"
    assert record["source"] == "api"
    stack.wait_execution(approval["approval_id"], "SUCCEEDED")
    assert stack.approval_messages(wait_s=1) == []  # ended without a resume
    # AND the emailed link says "already decided"
    page = stack.open(url)
    assert page.status == 409
    assert "already decided" in page.body
    assert _decide(stack, url, "reject").status == 409
    assert len(stack.api("GET", f"/threads/{thread_id}/runs").body) == 2


def test_deleting_the_thread_stops_the_waiting_execution(approval_stack: ApprovalStack) -> None:
    stack = approval_stack
    thread_id, approval = _ask_for_refund(stack)
    stack.pump_approvals("request")
    url = _link_from_email(stack)
    # WHEN the thread is deleted
    assert stack.api("DELETE", f"/threads/{thread_id}").status == 204
    # THEN its execution ends without a resume and the link says so
    stack.wait_execution(approval["approval_id"], "SUCCEEDED")
    assert stack.approval_messages(wait_s=1) == []
    page = stack.open(url, accept="application/json")
    assert page.status == 409
    assert page.json()["approval"]["status"] == "cancelled"


def test_reading_the_thread_state_leaves_its_approval_pending(
    approval_stack: ApprovalStack,
) -> None:
    stack = approval_stack
    # GIVEN a refund waiting for approval
    thread_id, approval = _ask_for_refund(stack)
    # WHEN a client reads the thread's state (as a UI showing the interrupt would)
    assert stack.api("GET", f"/threads/{thread_id}/state").status == 200
    # THEN the approval still waits for its reviewer
    record = stack.api("GET", f"/threads/{thread_id}/approvals").body[0]
    assert record["approval_id"] == approval["approval_id"]
    assert record["status"] == "pending"


def test_settled_before_the_token_arrives_sends_no_email(approval_stack: ApprovalStack) -> None:
    stack = approval_stack
    # GIVEN an approval whose token message has not been handled yet
    thread_id, approval = _ask_for_refund(stack)
    # WHEN the client resumes the thread through the API first
    stack.start_run(thread_id, command={"resume": {"decision": "reject", "approved": False}})
    stack.pump()
    # AND the token message arrives afterwards
    stack.pump_approvals("request")
    # THEN nobody is emailed, and the execution ends without resuming the thread again
    assert stack.emails_to(stack.reviewer) == []
    stack.wait_execution(approval["approval_id"], "SUCCEEDED")
    assert stack.approval_messages(wait_s=1) == []
    record = stack.api("GET", f"/threads/{thread_id}/approvals").body[0]
    assert (record["status"], record["source"]) == ("rejected", "api")
    assert len(stack.api("GET", f"/threads/{thread_id}/runs").body) == 2


def test_signing_key_from_secrets_manager(approval_stack: ApprovalStack) -> None:
    import boto3

    from functions.approvals import clients

    stack = approval_stack
    # GIVEN the signing key in Secrets Manager (as on AWS), none in the environment
    key = register_secret(base64.urlsafe_b64encode(os_random(32)).decode(), "signing secret")
    secrets = boto3.client("secretsmanager", endpoint_url=stack.endpoint)
    arn = secrets.create_secret(Name=f"approvals-{os_random(4).hex()}", SecretString=key)["ARN"]
    clients.secrets_client.cache_clear()
    stack.settings.approval_signing_key = ""
    stack.settings.approval_signing_secret_arn = arn
    # WHEN a refund asks for approval and the reviewer approves through the link
    thread_id, _ = _ask_for_refund(stack)
    stack.pump_approvals("request")
    url = _link_from_email(stack)
    # Each function reads the secret in its own process (cold start); here they share one.
    clients.secret_value.cache_clear()
    assert stack.open(url).status == 200
    assert _decide(stack, url, "approve").status == 200
    stack.pump_approvals("resume")
    stack.pump()
    # THEN the run resumed, and links are signed with the secret's key
    assert _last_reply(stack, thread_id) == "Your refund of $49 has been issued."
    from urllib.parse import unquote

    from functions.approvals import tokens

    token = unquote(url.split("token=", 1)[1])
    claims = tokens.verify(key.encode(), token, url.split("/approvals/")[1].split("?")[0], 0)
    assert claims.reviewer == stack.reviewer


def os_random(n: int) -> bytes:
    import os

    return os.urandom(n)


def test_an_approval_start_that_failed_is_finished_by_housekeeping(
    approval_stack: ApprovalStack,
) -> None:
    import time

    stack = approval_stack
    # GIVEN a run whose ending cannot start the execution (Step Functions refuses: the
    # state machine is missing), after the approval record was stored
    stack.settings.lease_s = 0.5
    good_arn = stack.state_machine_arn
    stack.settings.approval_state_machine_arn = good_arn + "-missing"
    thread_id = stack.create_thread()
    stack.start_run(thread_id, input=REFUND)
    for _ in range(6):
        batch = stack.receive(max_messages=1)
        if not batch:
            break
        stack.deliver(batch[0][0], [batch[0][1]])
        runs = stack.api("GET", f"/threads/{thread_id}/runs").body
        if runs[0]["status"] == "success":
            break
    (approval,) = stack.api("GET", f"/threads/{thread_id}/approvals").body
    assert approval["status"] == "pending"
    assert stack.emails_to(stack.reviewer) == []
    # WHEN Step Functions is back and housekeeping finds the unfinished ending
    stack.settings.approval_state_machine_arn = good_arn
    time.sleep(1)
    stack.housekeeping()
    stack.pump()  # the step message, redelivered, finds the ending finished or finishes it
    # THEN exactly one execution runs for the approval, and the approval goes on as usual
    executions = stack.sfn.list_executions(stateMachineArn=good_arn)["executions"]
    assert [e["name"] for e in executions] == [approval["approval_id"]]
    stack.pump_approvals("request")
    url = _link_from_email(stack)
    assert _decide(stack, url, "approve").status == 200
    stack.pump_approvals("resume")
    stack.pump()
    assert _last_reply(stack, thread_id) == "Your refund of $49 has been issued."


# --- cancelling the run that asked -------------------------------------------------------


def _cancel(stack: ApprovalStack, approval: dict[str, Any], **query: str) -> Any:
    return stack.api(
        "POST",
        f"/threads/{approval['thread_id']}/runs/{approval['run_id']}/cancel",
        query=query or None,
    )


def _refused_as_cancelled(stack: ApprovalStack, url: str) -> None:
    """The emailed link says "already decided: cancelled" and settles nothing."""
    page = stack.open(url)
    assert page.status == 409, page.body
    assert "already decided" in page.body
    as_json = stack.open(url, accept="application/json")
    assert as_json.json()["approval"]["status"] == "cancelled"
    assert _decide(stack, url, "approve").status == 409


def test_cancelling_the_run_stops_the_waiting_execution(approval_stack: ApprovalStack) -> None:
    stack = approval_stack
    # GIVEN a refund waiting for approval, its email sent, its execution waiting
    thread_id, approval = _ask_for_refund(stack)
    stack.pump_approvals("request")
    url = _link_from_email(stack)
    assert stack.execution(approval["approval_id"])["status"] == "RUNNING"
    # WHEN the client cancels the run that asked
    cancelled = _cancel(stack, approval, wait="1")
    # THEN the run stays as it ended, and its approval is withdrawn
    assert cancelled.status == 200, cancelled.body
    assert cancelled.body["status"] == "success"
    record = stack.api("GET", f"/threads/{thread_id}/approvals").body[0]
    assert (record["status"], record["source"]) == ("cancelled", "api")
    # AND the waiting execution ends without resuming the thread
    stack.wait_execution(approval["approval_id"], "SUCCEEDED")
    assert stack.approval_messages(wait_s=1) == []
    # AND the link says "already decided", a second cancel finds nothing to cancel
    _refused_as_cancelled(stack, url)
    assert _cancel(stack, approval).status == 404
    assert len(stack.api("GET", f"/threads/{thread_id}/runs").body) == 1
    assert stack.api("GET", f"/threads/{thread_id}").body["status"] == "interrupted"


def test_cancel_before_the_token_arrives_sends_no_email(approval_stack: ApprovalStack) -> None:
    stack = approval_stack
    # GIVEN an approval whose execution started but whose token message is not handled yet
    thread_id, approval = _ask_for_refund(stack)
    # WHEN the run is cancelled
    assert _cancel(stack, approval).status == 202
    # AND the token message arrives afterwards
    stack.pump_approvals("request")
    # THEN nobody is emailed and the execution ends without a resume
    assert stack.emails_to(stack.reviewer) == []
    stack.wait_execution(approval["approval_id"], "SUCCEEDED")
    assert stack.approval_messages(wait_s=1) == []
    record = stack.api("GET", f"/threads/{thread_id}/approvals").body[0]
    assert record["status"] == "cancelled"


def test_cancel_while_the_ending_starts_the_approval_starts_nothing(
    approval_stack: ApprovalStack,
) -> None:
    from tests.integration.test_run_endings import FailAws

    stack = approval_stack
    # GIVEN a run whose worker recorded the approval ending, then died before any of its
    # effects (the thread's release fails: no approval record, no execution yet)
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=REFUND)
    injector = FailAws()
    injector.attach()
    injector.fail(
        "UpdateItem",
        times=100,
        when=lambda p: "REMOVE active_run_id" in p.get("UpdateExpression", ""),
    )
    try:
        for _ in range(10):
            batch = stack.receive(max_messages=1)
            assert batch, "the run's step messages ran out before it ended"
            stack.deliver(batch[0][0], [batch[0][1]])
            record = stack.store.get_run(thread_id, run["run_id"])
            assert record is not None
            if not record.active:
                break
    finally:
        injector.detach()
    assert record.ending is not None
    assert "approval" in record.ending.effects
    assert stack.api("GET", f"/threads/{thread_id}/approvals").body == []
    # WHEN the client cancels the run while its ending is under way
    assert _cancel(stack, {"thread_id": thread_id, "run_id": run["run_id"]}).status == 202
    # AND the ending is finished afterwards (the worker's message back, housekeeping)
    stack.pump()
    stack.settings.lease_s = 0
    stack.housekeeping()
    stack.pump()
    # THEN the approval is recorded cancelled, and no execution was started for it
    (approval,) = stack.api("GET", f"/threads/{thread_id}/approvals").body
    assert (approval["status"], approval["source"]) == ("cancelled", "api")
    executions = stack.sfn.list_executions(stateMachineArn=stack.state_machine_arn)["executions"]
    assert approval["approval_id"] not in {e["name"] for e in executions}
    assert stack.emails_to(stack.reviewer) == []
    # AND the ending was finished: the thread shows the interrupt, free for a resume
    thread = stack.api("GET", f"/threads/{thread_id}").body
    assert thread["status"] == "interrupted"
    assert stack.store.get_run(thread_id, run["run_id"]).ending is None  # type: ignore[union-attr]
