"""Approval link tokens and approval requests, without AWS."""

from __future__ import annotations

import pytest

from functions.approvals import state_machine_definition, tokens
from functions.approvals.request import (
    MAX_TIMEOUT_S,
    approval_id_for,
    approval_requests,
    resume_value,
)

KEY = b"k" * 32


def test_a_token_verifies_for_its_approval_and_reviewer_until_it_expires() -> None:
    token = tokens.sign(KEY, "apr-1", "rev@example.com", expires_at=1000)
    claims = tokens.verify(KEY, token, "apr-1", now=999)
    assert (claims.approval_id, claims.reviewer, claims.expires_at) == (
        "apr-1",
        "rev@example.com",
        1000,
    )
    with pytest.raises(tokens.TokenExpired):
        tokens.verify(KEY, token, "apr-1", now=1000)
    with pytest.raises(tokens.TokenInvalid, match="another approval"):
        tokens.verify(KEY, token, "apr-2", now=0)
    with pytest.raises(tokens.TokenInvalid, match="not valid"):
        tokens.verify(b"x" * 32, token, "apr-1", now=0)


@pytest.mark.parametrize("bad", ["", "v1.a", "v2.a.b", "v1..", "garbage"])
def test_malformed_tokens_are_refused(bad: str) -> None:
    with pytest.raises(tokens.TokenInvalid):
        tokens.verify(KEY, bad, "apr-1", now=0)


def test_changing_any_claim_breaks_the_signature() -> None:
    token = tokens.sign(KEY, "apr-1", "rev@example.com", expires_at=1000)
    forged = tokens.sign(b"other", "apr-1", "boss@example.com", expires_at=9999)
    mixed = ".".join([*forged.split(".")[:2], token.split(".")[2]])
    with pytest.raises(tokens.TokenInvalid):
        tokens.verify(KEY, mixed, "apr-1", now=0)
    assert tokens.TokenInvalid.status_code == 403
    assert tokens.TokenExpired.status_code == 410


def _interrupts(value: object) -> dict[str, list[dict[str, object]]]:
    return {"task": [{"id": "i1", "value": value}, {"id": "i2", "value": "plain interrupt"}]}


def test_approval_requests_take_defaults_and_drop_what_is_not_an_email() -> None:
    (request,) = approval_requests(
        _interrupts(
            {"type": "approval", "summary": "Refund", "reviewers": ["a@x.io", "nope", "a@x.io"]}
        ),
        default_reviewers="d@x.io",
        default_timeout_s=60,
    )
    assert request.reviewers == ("a@x.io",)
    assert request.timeout_s == 60
    (defaulted,) = approval_requests(
        _interrupts({"type": "approval", "question": "Cancel?", "timeout_seconds": 10**12}),
        default_reviewers="d@x.io, e@x.io",
        default_timeout_s=60,
    )
    assert defaulted.reviewers == ("d@x.io", "e@x.io")
    assert defaulted.summary == "Cancel?"
    assert defaulted.timeout_s == MAX_TIMEOUT_S
    assert (
        approval_requests(_interrupts({"type": "other"}), default_reviewers="", default_timeout_s=1)
        == []
    )


def test_ids_are_derived_and_the_resume_value_has_the_contract_shape() -> None:
    assert approval_id_for("r", "i") == approval_id_for("r", "i") != approval_id_for("r", "j")
    assert len(approval_id_for("r", "i")) <= 80  # a Step Functions execution name
    assert resume_value("approve", "a@x.io", None, "t") == {
        "decision": "approve",
        "approved": True,
        "reviewer": "a@x.io",
        "comment": None,
        "decided_at": "t",
    }


def test_the_definition_gets_the_queue_url_and_nothing_else_changes() -> None:
    import json

    text = state_machine_definition("https://sqs.example/q")
    assert "${ApprovalQueueUrl}" not in text
    states = json.loads(text)["States"]
    urls = [
        s["Parameters"]["QueueUrl"]
        for s in states.values()
        if "QueueUrl" in s.get("Parameters", {})
    ]
    assert urls == ["https://sqs.example/q", "https://sqs.example/q"]
