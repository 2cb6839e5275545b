"""Large run inputs in the payload bucket, so every body the API accepts can run.

A run record holds the run's request (``kwargs``), and a DynamoDB item is at most 400 KB,
while the API accepts bodies up to 1 MiB. A run's ``input`` or ``command`` whose JSON is
over ``INLINE_MAX_BYTES`` is stored as an object of the payload bucket and the record holds
a reference, ``{"$lambdagraph_payload": "<key>", "bytes": n}``; the step worker reads it
back when it applies the input (the first step). ``GET run`` shows the reference, not the
megabyte (docs/run-path.md).

Objects live under ``runs/<thread>/<run>/`` — apart from the checkpointer's ``<thread>/``
prefix, whose pruning keeps only what checkpoints reference — and go with their run (a
rollback deletes the run) or their thread.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from botocore.exceptions import BotoCoreError, ClientError

from functions import aws
from functions.errors import InfrastructureError
from functions.jsonable import dumps, loads

# Fields of a run's request that may be large.
LARGE_FIELDS = ("input", "command")
# Above this a field goes to the bucket: the record stays far from 400 KB with the rest.
INLINE_MAX_BYTES = 64 * 1024
MARK = "$lambdagraph_payload"


def thread_prefix(thread_id: str) -> str:
    return f"runs/{quote(thread_id, safe='')}/"


def _key(thread_id: str, run_id: str, field: str) -> str:
    return f"{thread_prefix(thread_id)}{quote(run_id, safe='')}/{field}.json"


def reference(value: Any) -> str | None:
    """The object key a stored field refers to, None for a value kept inline."""
    if isinstance(value, dict) and set(value) == {MARK, "bytes"}:
        return str(value[MARK])
    return None


class RunPayloads:
    def __init__(self, bucket: str | None) -> None:
        self.bucket = bucket

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(Bucket=self.bucket, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise InfrastructureError(f"S3 {what} failed: {exc}") from exc

    def offload(self, thread_id: str, run_id: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` with its large fields in the bucket (as they are without a bucket)."""
        if not self.bucket:
            return kwargs
        out = dict(kwargs)
        for field in LARGE_FIELDS:
            if out.get(field) is None:
                continue
            body = dumps(out[field]).encode()
            if len(body) <= INLINE_MAX_BYTES:
                continue
            key = _key(thread_id, run_id, field)
            self._call(
                "PutObject",
                aws.s3_client().put_object,
                Key=key,
                Body=body,
                ContentType="application/json",
            )
            out[field] = {MARK: key, "bytes": len(body)}
        return out

    def resolve(self, value: Any) -> Any:
        """A field as the client sent it (read from the bucket if it was stored there)."""
        key = reference(value)
        if key is None:
            return value
        response = self._call("GetObject", aws.s3_client().get_object, Key=key)
        return loads(response["Body"].read().decode(), None)

    def delete_run(self, thread_id: str, run_id: str, kwargs: dict[str, Any]) -> None:
        keys = [k for k in (reference(kwargs.get(f)) for f in LARGE_FIELDS) if k]
        if not keys or not self.bucket:
            return
        self._call(
            "DeleteObjects",
            aws.s3_client().delete_objects,
            Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True},
        )

    def delete_thread(self, thread_id: str) -> None:
        """Every stored field of every run of the thread."""
        if not self.bucket:
            return
        client = aws.s3_client()
        paginator = client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=thread_prefix(thread_id)):
                keys = [o["Key"] for o in page.get("Contents", [])]
                if keys:
                    self._call(
                        "DeleteObjects",
                        client.delete_objects,
                        Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True},
                    )
        except (ClientError, BotoCoreError) as exc:
            raise InfrastructureError(f"S3 ListObjectsV2 failed: {exc}") from exc
