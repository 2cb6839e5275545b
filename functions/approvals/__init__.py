"""Human approval: a graph's ``interrupt({"type": "approval", ...})`` waits for a reviewer.

- ``request``: what an approval request is (the interrupt's value) and the resume value.
- ``tokens``: the signed link token (HMAC-SHA256, bound to approval, reviewer and expiry).
- ``records``: approval records in the runtime table (the only module here touching DynamoDB).
- ``clients``: Step Functions, SES and Secrets Manager calls, AWS errors wrapped.
- ``service``: the flow: start (a run-ending effect), notify (token message), decide (the
  page or the API), resume (the state machine's resume message, expiry included).
- ``pages``: the reviewer's page (``GET``/``POST /approvals/{id}``), HTML or JSON.
- ``state_machine.asl.json``: the one state machine definition, read by CDK and the local stack.
"""

from pathlib import Path

STATE_MACHINE_FILE = Path(__file__).with_name("state_machine.asl.json")
# The placeholder CDK's DefinitionSubstitutions and the local stack fill in.
QUEUE_URL_PLACEHOLDER = "${ApprovalQueueUrl}"


def state_machine_definition(queue_url: str) -> str:
    """The definition with the approval-requests queue filled in (the local stack's way)."""
    return STATE_MACHINE_FILE.read_text().replace(QUEUE_URL_PLACEHOLDER, queue_url)
