"""Step Functions, SES and Secrets Manager for approvals: the only AWS calls here besides
``records``. Clients are created once per process; AWS errors become ``InfrastructureError``.
"""

from __future__ import annotations

import json
from email.message import EmailMessage
from email.utils import formatdate
from functools import cache
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from functions.aws import _CONFIG
from functions.errors import InfrastructureError


@cache
def sfn_client() -> Any:
    return boto3.client("stepfunctions", config=_CONFIG)


@cache
def ses_client() -> Any:
    return boto3.client("ses", config=_CONFIG)


@cache
def secrets_client() -> Any:
    return boto3.client("secretsmanager", config=_CONFIG)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class TaskGone(Exception):
    """The execution no longer waits for this token (it timed out or was stopped)."""


def start_execution(state_machine_arn: str, name: str, payload: dict[str, Any]) -> str:
    """Start (or find: the name is derived from the approval) the approval's execution."""
    client = sfn_client()
    try:
        response = client.start_execution(
            stateMachineArn=state_machine_arn, name=name, input=json.dumps(payload)
        )
        return str(response["executionArn"])
    except ClientError as exc:
        if _code(exc) == "ExecutionAlreadyExists":
            # Started before (an ending finished twice): the same execution.
            prefix = state_machine_arn.replace(":stateMachine:", ":execution:")
            return f"{prefix}:{name}"
        raise InfrastructureError(f"Step Functions StartExecution failed: {exc}") from exc
    except BotoCoreError as exc:
        raise InfrastructureError(f"Step Functions StartExecution failed: {exc}") from exc


def send_task_success(task_token: str, output: dict[str, Any]) -> None:
    try:
        sfn_client().send_task_success(taskToken=task_token, output=json.dumps(output))
    except ClientError as exc:
        if _code(exc) in ("TaskTimedOut", "TaskDoesNotExist", "InvalidToken"):
            raise TaskGone(_code(exc)) from exc
        raise InfrastructureError(f"Step Functions SendTaskSuccess failed: {exc}") from exc
    except BotoCoreError as exc:
        raise InfrastructureError(f"Step Functions SendTaskSuccess failed: {exc}") from exc


def send_email(sender: str, to: str, subject: str, text: str, html: str) -> None:
    """One MIME message with a text and an HTML part (``SendRawEmail``: SES's simple
    ``SendEmail`` would do too, but the local stack's moto keeps only one of its bodies)."""
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = to
    message["Date"] = formatdate(usegmt=True)
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    try:
        ses_client().send_raw_email(
            Source=sender, Destinations=[to], RawMessage={"Data": message.as_bytes()}
        )
    except (ClientError, BotoCoreError) as exc:
        raise InfrastructureError(f"SES SendRawEmail failed: {exc}") from exc


@cache
def secret_value(secret_arn: str) -> str:
    """The secret's string, read once per process (cold start)."""
    try:
        return str(secrets_client().get_secret_value(SecretId=secret_arn)["SecretString"])
    except (ClientError, BotoCoreError) as exc:
        raise InfrastructureError("Secrets Manager GetSecretValue failed") from exc
