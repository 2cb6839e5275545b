"""Human approval on the local stack: what ``infra.constructs.approvals`` deploys on AWS.

- Step Functions execution switched on in the embedded moto (``POST /moto-api/config``, with
  ``MOTO_PORT`` naming the server its service integrations call back).
- The approval state machine registered from ``functions/approvals/state_machine.asl.json``
  (the file CDK deploys) with the local approval-requests queue substituted.
- The SES sender verified; the link signing key from ``LAMBDAGRAPH_APPROVAL_SIGNING_KEY``,
  or generated for the session when unset (links then stop working when the stack stops).
- Mail stays in moto: ``GET /_local/emails`` (``infra.local.emails``).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import urllib.request
from typing import Any

from functions.approvals import state_machine_definition
from functions.resources import APPROVAL_QUEUE, APPROVAL_STATE_MACHINE_LOGICAL_ID, local_name
from functions.settings import Settings

log = logging.getLogger(__name__)

EMAILS_PATH = "/_local/emails"
ROLE_ARN = "arn:aws:iam::123456789012:role/lambdagraph-approvals"


def enable_execution(moto_url: str) -> None:
    request = urllib.request.Request(
        f"{moto_url}/moto-api/config",
        data=json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def set_up(moto_url: str, sfn: Any, ses: Any, queue_url: str) -> dict[str, str]:
    """Create what approvals need on moto; the environment that points functions at it."""
    enable_execution(moto_url)
    name = local_name(APPROVAL_STATE_MACHINE_LOGICAL_ID)
    # moto keeps one backend per process: a stack started before in this process left one.
    for machine in sfn.list_state_machines()["stateMachines"]:
        if machine["name"] == name:
            sfn.delete_state_machine(stateMachineArn=machine["stateMachineArn"])
    arn = sfn.create_state_machine(
        name=name,
        definition=state_machine_definition(queue_url),
        roleArn=ROLE_ARN,
        type="STANDARD",
    )["stateMachineArn"]
    sender = os.environ.get("LAMBDAGRAPH_APPROVAL_SENDER") or Settings().approval_sender
    ses.verify_email_identity(EmailAddress=sender)
    env = {
        "LAMBDAGRAPH_APPROVAL_STATE_MACHINE_ARN": str(arn),
        APPROVAL_QUEUE.env_var: queue_url,
        "LAMBDAGRAPH_APPROVAL_SENDER": sender,
    }
    if not os.environ.get("LAMBDAGRAPH_APPROVAL_SIGNING_KEY"):
        # Kept for the session (every process of the stack reads it from the environment).
        env["LAMBDAGRAPH_APPROVAL_SIGNING_KEY"] = secrets.token_urlsafe(32)
        log.info("approval links are signed with a key generated for this session")
    return env
