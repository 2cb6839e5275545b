"""What the saver keeps in memory between calls, and what a write is storing (for errors)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from functions.checkpoint.codec import StoredWrite, Typed


@dataclass(frozen=True)
class Target:
    """What a write path is storing, for its errors: thread, namespace and a description
    ("checkpoint 'x'", "the writes of task 't' to checkpoint 'x'")."""

    thread_id: str
    ns: str
    what: str


class ObjectMissingError(Exception):
    """An S3 object an item references is gone (reported as the checkpoint's read error)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"S3 object {key!r} holding part of it is missing")


@dataclass
class Resolved:
    """A checkpoint record with its parent diffs applied."""

    versions: dict[str, Any]
    seen: dict[str, dict[str, Any]]
    metadata: dict[str, Any]
    updated: list[str] | None
    record_start: str  # sort key suffix of the full record this one is a diff chain from
    # The record's own versions_seen diff (None for a full record): the next record stores
    # SAME_SEEN instead of repeating it, which is every step of a loop.
    seen_diff: dict[str, Any] | None = None


@dataclass
class ThreadState:
    """What this saver last read or wrote for one (thread, namespace): the put() that
    follows a get_tuple() in the same invocation stores only what changed."""

    checkpoint_id: str
    base: str  # sort key suffix of the oldest item this checkpoint's values need
    values: dict[str, Typed | None]  # serialized channel values (None = empty channel)
    starts: dict[str, str]  # channel -> sort key suffix of the oldest item it is rebuilt from
    resolved: Resolved
    window: dict[str, int]  # sort key suffix -> item size, for the items from base up
    base_age: int = 0  # records since the last one that stored its base explicitly
    # sort key suffix -> the item's ``ttl`` (epoch seconds), for window items that have one
    expires: dict[str, int] = field(default_factory=dict)


@dataclass
class WriteBatch:
    """One put_writes call of this saver, registered before its PutItem so that a put()
    running concurrently (LangGraph saves writes and checkpoints from a thread pool) can
    wait for it instead of missing it."""

    writes: list[StoredWrite]
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False
