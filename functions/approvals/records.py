"""Approval records in the runtime table; the only module of approvals that touches DynamoDB.

| item     | pk                  | sk                 | gsi1pk                | gsi1sk                              |
|----------|---------------------|--------------------|-----------------------|-------------------------------------|
| approval | ``APPROVAL#<aid>``  | ``APPROVAL``       | ``APPROVALS#<tenant>``| ``<status>#<created_at>#<aid>``     |
| pointer  | ``THREAD#<tid>``    | ``APPROVAL#<aid>`` |                       |                                     |

The pointer lists a thread's approvals (and goes when the thread is deleted); the index
lists a tenant's approvals by status. Status moves once, from ``pending`` to ``approved``,
``rejected``, ``expired`` or ``cancelled``, by a conditional write: that write is what makes
a decision happen once. The task token (needed for ``SendTaskSuccess``) is stored; the link
tokens are not (they verify by their signature).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from boto3.dynamodb.conditions import Key
from botocore.exceptions import BotoCoreError, ClientError

from functions import aws
from functions.errors import InfrastructureError
from functions.jsonable import dumps, loads

PENDING = "pending"
FINAL_STATUSES = ("approved", "rejected", "expired", "cancelled")


@dataclass
class ApprovalRecord:
    approval_id: str
    tenant: str
    thread_id: str
    run_id: str
    assistant_id: str
    interrupt_id: str
    summary: str
    action: Any
    reviewers: list[str]
    timeout_s: int
    created_at: str
    expires_at: int
    status: str = PENDING
    decision: dict[str, Any] | None = None
    source: str | None = None
    task_token: str | None = None
    execution_arn: str | None = None
    emailed: list[str] = field(default_factory=list)
    resumed_run_id: str | None = None
    reason: str = ""

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> ApprovalRecord:
        return cls(
            approval_id=str(item["approval_id"]),
            tenant=str(item["tenant"]),
            thread_id=str(item["thread_id"]),
            run_id=str(item["run_id"]),
            assistant_id=str(item["assistant_id"]),
            interrupt_id=str(item["interrupt_id"]),
            summary=str(item["summary"]),
            action=loads(item.get("action")),
            reviewers=list(item.get("reviewers") or []),
            timeout_s=int(item["timeout_s"]),
            created_at=str(item["created_at"]),
            expires_at=int(item["expires_at"]),
            status=str(item["status"]),
            decision=loads(item.get("decision")),
            source=item.get("source"),
            task_token=item.get("task_token"),
            execution_arn=item.get("execution_arn"),
            emailed=list(item.get("emailed") or []),
            resumed_run_id=item.get("resumed_run_id"),
            reason=str(item.get("reason") or ""),
        )

    def to_api(self) -> dict[str, Any]:
        """What clients see (never the task token)."""
        return {
            "approval_id": self.approval_id,
            "thread_id": self.thread_id,
            "run_id": self.run_id,
            "assistant_id": self.assistant_id,
            "interrupt_id": self.interrupt_id,
            "summary": self.summary,
            "reason": self.reason,
            "action": self.action,
            "reviewers": self.reviewers,
            "status": self.status,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "decision": self.decision,
            "source": self.source,
            "resumed_run_id": self.resumed_run_id,
        }


def _key(approval_id: str) -> dict[str, str]:
    return {"pk": f"APPROVAL#{approval_id}", "sk": "APPROVAL"}


def _conditional_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class ApprovalRecords:
    def __init__(self, table_name: str) -> None:
        self._table = aws.table(table_name)

    def _call(self, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except ClientError as exc:
            if _conditional_failed(exc):
                raise
            raise InfrastructureError(f"DynamoDB {fn.__name__} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise InfrastructureError(f"DynamoDB {fn.__name__} failed: {exc}") from exc

    def put_if_absent(self, record: ApprovalRecord) -> bool:
        """Store a new approval (and its thread pointer); False if it exists already."""
        item: dict[str, Any] = {
            **_key(record.approval_id),
            "gsi1pk": f"APPROVALS#{record.tenant}",
            "gsi1sk": f"{record.status}#{record.created_at}#{record.approval_id}",
            "approval_id": record.approval_id,
            "tenant": record.tenant,
            "thread_id": record.thread_id,
            "run_id": record.run_id,
            "assistant_id": record.assistant_id,
            "interrupt_id": record.interrupt_id,
            "summary": record.summary,
            "reason": record.reason,
            "action": dumps(record.action),
            "reviewers": record.reviewers,
            "timeout_s": record.timeout_s,
            "created_at": record.created_at,
            "expires_at": record.expires_at,
            "status": record.status,
        }
        created = True
        try:
            self._call(
                self._table.put_item, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
        except ClientError:
            created = False
        # The pointer is written either way: a crash may have come between the two writes.
        self._call(
            self._table.put_item,
            Item={
                "pk": f"THREAD#{record.thread_id}",
                "sk": f"APPROVAL#{record.approval_id}",
                "approval_id": record.approval_id,
            },
        )
        return created

    def get(self, approval_id: str) -> ApprovalRecord | None:
        response = self._call(self._table.get_item, Key=_key(approval_id), ConsistentRead=True)
        item = response.get("Item")
        return ApprovalRecord.from_item(item) if item else None

    def _set(
        self,
        approval_id: str,
        values: dict[str, Any],
        *,
        condition: str,
        condition_values: dict[str, Any] | None = None,
    ) -> bool:
        names = {f"#{k}": k for k in values}
        expr = "SET " + ", ".join(f"#{k} = :{k}" for k in values)
        expr_values = {f":{k}": v for k, v in values.items()}
        if "#status" in condition:
            names["#status"] = "status"
        expr_values.update(condition_values or {})
        try:
            self._call(
                self._table.update_item,
                Key=_key(approval_id),
                UpdateExpression=expr,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=expr_values,
            )
        except ClientError:
            return False
        return True

    def set_execution(self, approval_id: str, execution_arn: str) -> None:
        self._set(approval_id, {"execution_arn": execution_arn}, condition="attribute_exists(pk)")

    def set_task_token(self, approval_id: str, task_token: str) -> bool:
        """Keep the execution's task token; False if the approval is no longer pending."""
        return self._set(
            approval_id,
            {"task_token": task_token},
            condition="#status = :pending",
            condition_values={":pending": PENDING},
        )

    def mark_emailed(self, approval_id: str, reviewer: str) -> None:
        """Note that ``reviewer`` has been sent the link (a redelivery skips them)."""
        self._call(
            self._table.update_item,
            Key=_key(approval_id),
            UpdateExpression="SET #e = list_append(if_not_exists(#e, :empty), :r)",
            ExpressionAttributeNames={"#e": "emailed"},
            ExpressionAttributeValues={":empty": [], ":r": [reviewer]},
        )

    def settle(
        self, record: ApprovalRecord, status: str, decision: dict[str, Any], source: str
    ) -> bool:
        """pending -> ``status`` with the decision, once; False if it was settled already."""
        return self._set(
            record.approval_id,
            {
                "status": status,
                "decision": dumps(decision),
                "source": source,
                "gsi1sk": f"{status}#{record.created_at}#{record.approval_id}",
            },
            condition="#status = :pending",
            condition_values={":pending": PENDING},
        )

    def set_resumed(self, approval_id: str, run_id: str) -> None:
        self._set(approval_id, {"resumed_run_id": run_id}, condition="attribute_exists(pk)")

    def for_thread(self, thread_id: str) -> list[ApprovalRecord]:
        ids = []
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("pk").eq(f"THREAD#{thread_id}")
            & Key("sk").begins_with("APPROVAL#"),
            "ConsistentRead": True,
        }
        while True:
            response = self._call(self._table.query, **kwargs)
            ids += [str(item["approval_id"]) for item in response.get("Items", [])]
            if "LastEvaluatedKey" not in response:
                break
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        records = [self.get(approval_id) for approval_id in ids]
        found = [r for r in records if r is not None]
        found.sort(key=lambda r: r.created_at)
        return found

    def for_tenant(self, tenant: str, status: str | None) -> list[ApprovalRecord]:
        condition: Any = Key("gsi1pk").eq(f"APPROVALS#{tenant}")
        if status:
            condition = condition & Key("gsi1sk").begins_with(f"{status}#")
        kwargs: dict[str, Any] = {"IndexName": "gsi1", "KeyConditionExpression": condition}
        found = []
        while True:
            response = self._call(self._table.query, **kwargs)
            found += [ApprovalRecord.from_item(item) for item in response.get("Items", [])]
            if "LastEvaluatedKey" not in response:
                break
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        found.sort(key=lambda r: r.created_at)
        return found
