"""The write path: a checkpoint stores only what changed since its parent.

A list channel that only grew stores the appended elements, or just a reference when they
are the parent's pending writes (``operator.add``, ``add_messages``); versions, versions seen
and metadata are diffs against the parent. When the read window holds more dead bytes than
live ones, or with a TTL when it would rely on items expiring before its own retention ends,
``put`` stores every value in full (compaction). See docs/checkpointer.md.
"""

from __future__ import annotations

import builtins
import copy
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    get_checkpoint_metadata,
)

from functions.checkpoint import codec
from functions.checkpoint.codec import (
    EMPTY,
    FROM_WRITES,
    FULL,
    SAME_SEEN,
    SIDE,
    TAIL,
    WRITE_VALUE,
    CheckpointRecord,
    StoredWrite,
    Typed,
)
from functions.checkpoint.errors import ITEM_LIMIT_TEXT, CheckpointWriteError
from functions.checkpoint.layout import (
    AWAIT_WRITES_S,
    BASE_EVERY,
    CHECKPOINT_KEYS,
    COMPACT_SLACK,
    DATA,
    DIFF_CHAIN_BYTES,
    ITEM_BUDGET,
    ITEM_LIMIT,
    PK,
    SEP,
    SIDE_CHANNELS,
    SIDE_MIN_BYTES,
    SIDE_SEP,
    SK,
    TASK_REF,
    check_key_part,
    item_size,
    ns_prefix,
    read_floor,
)
from functions.checkpoint.reads import ReadPath
from functions.checkpoint.state import Resolved, Target, ThreadState, WriteBatch


class WritePath(ReadPath):
    """put / put_writes: deltas, references, compaction and the TTL rule."""

    def _encode_record(
        self, target: Target, checkpoint_id: str, record: CheckpointRecord, sort_key: str
    ) -> bytes:
        """The record's item data, its largest values moved to S3 until the item fits."""
        self._offload(target, checkpoint_id, record.blobs)
        while True:
            data = record.encode(self.compress_min_bytes)
            size = item_size(target.thread_id, sort_key, data)
            if size <= ITEM_LIMIT:
                return data
            # Versions, metadata or references fill the item: move every value out too.
            if not self._offload(target, checkpoint_id, record.blobs, 0):
                raise CheckpointWriteError(
                    target.thread_id,
                    target.ns,
                    target.what,
                    f"its item would be {size:,} bytes with every value in S3, more than "
                    f"DynamoDB holds ({ITEM_LIMIT_TEXT}): its metadata or channel versions "
                    "are too large",
                )

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint: one PutItem holding only what changed since its parent."""
        configurable = config["configurable"]
        thread_id: str = configurable["thread_id"]
        ns: str = configurable.get("checkpoint_ns", "")
        parent: str | None = configurable.get("checkpoint_id")
        checkpoint_id = checkpoint["id"]
        check_key_part("checkpoint_ns", ns)
        check_key_part("checkpoint_id", checkpoint_id)
        values = checkpoint["channel_values"]
        versions = dict(checkpoint["channel_versions"])
        seen = {k: dict(v) for k, v in checkpoint["versions_seen"].items()}
        # Deep copies: these are cached as the thread's latest state and diffed against at the
        # next put(), while LangGraph (another thread, even) keeps using its own objects.
        md = copy.deepcopy(dict(get_checkpoint_metadata(config, metadata)))
        updated = checkpoint.get("updated_channels")
        # Taken before anything is stored, so nothing written for this checkpoint (its S3
        # objects included) was created before the time its expiry counts from.
        now = self._clock()
        expiry = self._expiry(now)

        with self._lock:
            state = self._state.get((thread_id, ns))
            if state is not None:
                # put_writes() may add to the window concurrently: work on a copy.
                state = replace(state, window=dict(state.window), expires=dict(state.expires))
        if state is not None and state.checkpoint_id != parent:
            state = None  # not the checkpoint this saver last saw: store everything
        if (
            state is None
            and parent is not None
            and any(ch not in values and ch not in new_versions for ch in versions)
        ):
            # A fork, update_state or a put without a read: channels that kept the parent's
            # version without a value here hold the parent's value, so read the parent once.
            state = self._parent_state(thread_id, ns, parent)

        planned = self._incremental(
            thread_id, ns, state, parent, checkpoint_id, values, versions, new_versions, md
        )
        if planned is None:
            blobs, new_values, starts = self._full_values(
                checkpoint_id, values, versions, new_versions, state
            )
            value_base = checkpoint_id
        else:
            blobs, new_values, starts, value_base = planned

        diff = None
        if planned is not None and state is not None:
            diff = self._record_diff(state.resolved, versions, seen, md)
            if diff is not None:
                # A diff chains this record to the parent's full record: worth it only while
                # that keeps the read window about where the values already start.
                start = state.resolved.record_start
                between = sum(s for sk, s in state.window.items() if start <= sk < value_base)
                if between > DIFF_CHAIN_BYTES:
                    diff = None
        record_start = state.resolved.record_start if diff is not None and state else checkpoint_id
        base = read_floor(min(value_base, record_start, checkpoint_id))
        if self._expiring(state, base, now):
            # What this would be rebuilt from expires before this checkpoint's retention
            # ends: store it in full, so it relies on nothing older (see _expiring).
            blobs, new_values, starts = self._full_values(
                checkpoint_id, values, versions, new_versions, state
            )
            diff, base, record_start, planned = None, checkpoint_id, checkpoint_id, None

        side: dict[str, bytes] = {}
        for channel in SIDE_CHANNELS:
            entry = blobs.get(channel)
            if entry and entry[0] == FULL and SIDE_MIN_BYTES <= len(entry[2]) <= ITEM_BUDGET:
                code, side[channel] = codec.store(entry[1], entry[2], self.compress_min_bytes)
                blobs[channel] = [SIDE, code]
        extra = {k: v for k, v in checkpoint.items() if k not in CHECKPOINT_KEYS and v}
        # Unchanged from the parent's (the usual step): readers find it by walking parents,
        # which the read window holds anyway.
        # Every BASE_EVERY records it is stored anyway, so that a cold reader finds it among
        # the first page's newest items instead of walking parents one Query at a time.
        inherit = state is not None and base == state.base and state.base_age < BASE_EVERY
        stored_base: str | None = None if inherit else base
        seen_diff: dict[str, Any] | None = None
        stored_seen: dict[str, Any] | int
        stored_md: Typed | None
        if diff is not None and state is not None:
            versions_field, seen_diff, md_field = diff
            # A loop repeats its versions_seen diff and only moves the step: say so in a byte.
            stored_seen = SAME_SEEN if seen_diff == state.resolved.seen_diff else seen_diff
            prev_step = state.resolved.metadata.get("step")
            next_step = type(prev_step) is int and md_field == {"step": prev_step + 1}
            stored_md = None if next_step else self.serde.dumps_typed(md_field)
            changed_to = set(versions_field.values())
            if (
                len(changed_to) == 1
                and None not in changed_to
                and set(versions_field) == set(blobs)
            ):
                versions_field = changed_to.pop()  # one version for every changed channel
        else:
            versions_field, stored_seen, stored_md = versions, seen, self.serde.dumps_typed(md)
        record = CheckpointRecord(
            parent=parent,
            ts=checkpoint["ts"],
            v=checkpoint["v"],
            channel_versions=versions_field,
            versions_seen=stored_seen,
            updated_channels=1
            if updated is not None and sorted(updated) == sorted(blobs)
            else updated,
            metadata=stored_md,
            base=stored_base,
            blobs=blobs,
            extra=self.serde.dumps_typed(extra) if extra else None,
            diff=diff is not None,
        )
        sort_key = ns_prefix(ns) + checkpoint_id
        target = Target(thread_id, ns, f"checkpoint {checkpoint_id!r}")
        data = self._encode_record(target, checkpoint_id, record, sort_key)
        item = {
            PK: {"S": thread_id},
            SK: {"S": sort_key},
            DATA: {"B": data},
            **self._ttl_attr(expiry),
        }
        if side:
            # One request still: the checkpoint and its side items in one batch.
            side_items = [
                {
                    PK: {"S": thread_id},
                    SK: {"S": f"{ns}{SIDE_SEP}{checkpoint_id}{SEP}{channel}"},
                    DATA: {"B": value},
                    **self._ttl_attr(expiry),
                }
                for channel, value in side.items()
            ]
            self._batch_write([{"PutRequest": {"Item": i}} for i in [*side_items, item]])
        else:
            self._put_item(item)
        window: dict[str, int] = {}
        expires: dict[str, int] = {}
        if planned is not None and state is not None:
            window = {sk: size for sk, size in state.window.items() if sk >= base}
            expires = {sk: ttl for sk, ttl in state.expires.items() if sk >= base}
        window[checkpoint_id] = item_size(thread_id, sort_key, data)
        if expiry is not None:
            expires[checkpoint_id] = expiry
        resolved = Resolved(
            versions=versions,
            seen=seen,
            metadata=md,
            updated=list(updated) if updated is not None else None,
            record_start=record_start,
            seen_diff=seen_diff,
        )
        with self._lock:
            current = self._state.get((thread_id, ns))
            if current is not None:
                # Writes to the new checkpoint that landed while it was being stored.
                window.update(
                    {sk: size for sk, size in current.window.items() if sk > checkpoint_id}
                )
                expires.update(
                    {sk: ttl for sk, ttl in current.expires.items() if sk > checkpoint_id}
                )
            self._remember(
                thread_id,
                ns,
                ThreadState(
                    checkpoint_id=checkpoint_id,
                    base=base,
                    values=new_values,
                    starts=starts,
                    resolved=resolved,
                    window=window,
                    base_age=state.base_age + 1 if inherit and state is not None else 0,
                    expires=expires,
                ),
            )
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": ns,
                "checkpoint_id": checkpoint_id,
            }
        }

    def _parent_state(self, thread_id: str, ns: str, parent: str) -> ThreadState | None:
        self.get_tuple(
            {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": parent}}
        )
        with self._lock:
            state = self._state.get((thread_id, ns))
            if state is None or state.checkpoint_id != parent:
                return None
            return replace(state, window=dict(state.window), expires=dict(state.expires))

    def _full_values(
        self,
        checkpoint_id: str,
        values: dict[str, Any],
        versions: dict[str, Any],
        new_versions: ChannelVersions,
        state: ThreadState | None,
    ) -> tuple[dict[str, builtins.list[Any]], dict[str, Typed | None], dict[str, str]]:
        """Every channel's value in full: the checkpoint depends on no other item. A channel
        that kept the parent's version without a value here (a DeltaChannel between
        snapshots) holds the parent's value (``state``), as in LangGraph's own savers."""
        blobs: dict[str, builtins.list[Any]] = {}
        new_values: dict[str, Typed | None] = {}
        starts: dict[str, str] = {}
        for channel in versions:
            inherited = None
            if channel not in values and channel not in new_versions and state is not None:
                inherited = state.values.get(channel)
            if channel in values or inherited is not None:
                typed = inherited or self.serde.dumps_typed(values[channel])
                new_values[channel] = typed
                blobs[channel] = [FULL, codec.type_code(typed[0]), typed[1]]
                starts[channel] = checkpoint_id
            else:
                blobs[channel] = [EMPTY]
                new_values[channel] = None
        return blobs, new_values, starts

    def _incremental(
        self,
        thread_id: str,
        ns: str,
        state: ThreadState | None,
        parent: str | None,
        checkpoint_id: str,
        values: dict[str, Any],
        versions: dict[str, Any],
        new_versions: ChannelVersions,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[dict[str, builtins.list[Any]], dict[str, Typed | None], dict[str, str], str] | None:
        """Only the channels whose version changed, as references or appended tails where
        possible; None when a full checkpoint is due (no parent known, or compaction)."""
        if state is None or parent is None:
            return None
        ns_writes = self._saved_writes(thread_id, ns, parent)
        grew = [
            ch
            for ch in new_versions
            if isinstance(values.get(ch), list) and state.values.get(ch) is not None
        ]
        if not ns_writes and grew and self._await_writes(thread_id, ns, parent):
            ns_writes = self._saved_writes(thread_id, ns, parent)
        blobs: dict[str, builtins.list[Any]] = {}
        new_values: dict[str, Typed | None] = {}
        starts: dict[str, str] = {}
        for channel in versions:
            if channel in new_versions:
                continue
            if channel in state.values:
                new_values[channel] = state.values[channel]
                if channel in state.starts:
                    starts[channel] = state.starts[channel]
            elif channel in values:
                typed = self.serde.dumps_typed(values[channel])
                new_values[channel] = typed
                blobs[channel] = [FULL, codec.type_code(typed[0]), typed[1]]
                starts[channel] = checkpoint_id
        delta_channels = (metadata or {}).get("counters_since_delta_snapshot") or {}
        for channel in new_versions:
            if channel not in values:
                blobs[channel] = [EMPTY]
                new_values[channel] = None
                if channel in delta_channels and channel in state.starts:
                    # A DeltaChannel between snapshots: LangGraph rebuilds it from the writes
                    # since its last snapshot, so keep those in the read window.
                    starts[channel] = state.starts[channel]
                continue
            typed = self.serde.dumps_typed(values[channel])
            new_values[channel] = typed
            written = self._written_value(typed, channel, ns_writes)
            if written is not None:
                blobs[channel], starts[channel] = written
                continue
            entry = self._delta_entry(state.values.get(channel), typed, channel, ns_writes)
            if entry is not None and channel in state.starts:
                blobs[channel] = entry
                starts[channel] = state.starts[channel]
                continue
            blobs[channel] = [FULL, codec.type_code(typed[0]), typed[1]]
            starts[channel] = checkpoint_id
        value_base = min([checkpoint_id, *starts.values()])
        live = sum(len(t[1]) for t in new_values.values() if t is not None)
        window_bytes = sum(size for sk, size in state.window.items() if sk >= value_base)
        if window_bytes > 2 * live + COMPACT_SLACK:
            # More dead bytes than live ones in the read window: compact.
            return None
        return blobs, new_values, starts, value_base

    @staticmethod
    def _record_diff(
        prev: Resolved,
        versions: dict[str, Any],
        seen: dict[str, dict[str, Any]],
        md: dict[str, Any],
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None:
        """The record's versions, versions seen and metadata as changes against the
        parent's; None when metadata lost a key (a full record says that simply)."""
        if any(key not in md for key in prev.metadata):
            return None
        versions_diff: dict[str, Any] = {
            ch: v for ch, v in versions.items() if prev.versions.get(ch) != v
        }
        versions_diff.update({ch: None for ch in prev.versions if ch not in versions})
        seen_diff: dict[str, Any] = {}
        for node, mapping in seen.items():
            before = prev.seen.get(node)
            if before == mapping:
                continue
            if mapping == prev.versions:
                seen_diff[node] = 0
            elif before is not None and mapping == {ch: prev.versions.get(ch) for ch in before}:
                seen_diff[node] = 1  # the same channels, seen at the parent's versions
            else:
                seen_diff[node] = mapping
        seen_diff.update({node: None for node in prev.seen if node not in seen})
        md_diff = {k: v for k, v in md.items() if k not in prev.metadata or prev.metadata[k] != v}
        return versions_diff, seen_diff, md_diff

    def _expiring(self, state: ThreadState | None, base: str, now: float) -> bool:
        """With a TTL: would this checkpoint be rebuilt from an item that expires before the
        checkpoint's own retention ends (``now + ttl_seconds``)? Items are written to live
        the retention plus a margin, so this is "an item written more than the margin ago"
        (or one written under a shorter TTL); the checkpoint is then stored in full. After a
        thread's last write, everything its head needs outlives the head's retention."""
        if self.ttl_seconds is None or state is None:
            return False
        readable_until = now + self.ttl_seconds
        return any(ttl < readable_until for sk, ttl in state.expires.items() if sk >= base)

    @staticmethod
    def _delta_entry(
        old: Typed | None, new: Typed, channel: str, parent_writes: builtins.list[StoredWrite]
    ) -> builtins.list[Any] | None:
        """A TAIL / FROM_WRITES entry when ``new`` is ``old`` with elements appended."""
        if old is None or old[0] != "msgpack" or new[0] != "msgpack":
            return None
        old_split = codec.split_array(old[1])
        new_split = codec.split_array(new[1])
        if old_split is None or new_split is None:
            return None
        old_count, old_body = old_split
        new_count, new_body = new_split
        if new_count <= old_count or not new_body.startswith(old_body):
            return None
        tail = new_body[len(old_body) :]
        added = new_count - old_count
        parts: builtins.list[bytes] = []
        refs: builtins.list[Any] = []
        count = 0
        for write in ReadPath._sorted_writes(parent_writes):
            if write.channel != channel:
                continue
            if write.data is None:
                return [TAIL, added, tail]  # a write in S3: keep the tail inline
            elements = codec.as_elements((write.type_, write.data))
            if elements is None:
                return [TAIL, added, tail]
            count += elements[0]
            parts.append(elements[1])
            refs.extend((write.task_id[:TASK_REF], write.idx))
        if count == added and b"".join(parts) == tail:
            return [FROM_WRITES, added, refs]
        return [TAIL, added, tail]

    @staticmethod
    def _written_value(
        new: Typed, channel: str, parent_writes: builtins.list[StoredWrite]
    ) -> tuple[builtins.list[Any], str] | None:
        """A WRITE_VALUE entry when ``new`` is exactly what one parent write stored (a
        channel set by a write: the graph input, a last-value channel)."""
        if len(new[1]) < 64:
            return None  # an inline value is as small as a reference
        matches = [
            w
            for w in parent_writes
            if w.channel == channel and w.type_ == new[0] and w.data == new[1]
        ]
        if len(matches) != 1:
            return None
        write = matches[0]
        return [WRITE_VALUE, write.task_id[:TASK_REF], write.idx], write.sort_key

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store one task's writes: one PutItem per call (values over the limit go to S3)."""
        if not writes:
            return
        configurable = config["configurable"]
        thread_id: str = configurable["thread_id"]
        ns: str = configurable.get("checkpoint_ns", "")
        checkpoint_id: str = configurable["checkpoint_id"]
        check_key_part("task_id", task_id)
        if task_id.startswith(codec.TASK_KEY_MARK):
            raise ValueError(f"task_id must not start with U+001D: {task_id!r}")
        # Registered before any work so a put() running concurrently knows to wait for it.
        batch = WriteBatch(writes=[])
        with self._lock:
            by_checkpoint = self._writes.setdefault((thread_id, ns), OrderedDict())
            self._writes.move_to_end((thread_id, ns))
            by_checkpoint.setdefault(checkpoint_id, []).append(batch)
            while len(by_checkpoint) > 4:
                by_checkpoint.popitem(last=False)
            self._trim()
        try:
            self._put_writes(thread_id, ns, checkpoint_id, writes, task_id, task_path, batch)
        finally:
            batch.done.set()

    def _put_writes(
        self,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
        batch: WriteBatch,
    ) -> None:
        stored: builtins.list[StoredWrite] = []
        for idx, (channel, value) in enumerate(writes):
            type_, data = self.serde.dumps_typed(value)
            stored.append(
                StoredWrite(
                    task_id=task_id,
                    task_path=task_path,
                    idx=WRITES_IDX_MAP.get(channel, idx),
                    channel=channel,
                    type_=type_,
                    data=data,
                )
            )
        expiry = self._expiry(self._clock())  # before any S3 object is created
        first_idx = stored[0].idx
        suffix = f"{checkpoint_id}{SEP}{codec.task_key(task_id)}{SEP}{first_idx}"
        sort_key = ns_prefix(ns) + suffix
        for write in stored:
            write.sort_key = suffix
        target = Target(
            thread_id, ns, f"the writes of task {task_id!r} to checkpoint {checkpoint_id!r}"
        )
        self._offload_writes(target, checkpoint_id, stored)
        while True:
            data = codec.encode_writes(task_path, stored, self.compress_min_bytes)
            size = item_size(thread_id, sort_key, data)
            if size <= ITEM_LIMIT:
                break
            # Many writes, each small: their keys and names fill the item; move them all.
            if not self._offload_writes(target, checkpoint_id, stored, 0):
                raise CheckpointWriteError(
                    thread_id,
                    ns,
                    target.what,
                    f"its item would be {size:,} bytes with every value in S3, more than "
                    f"DynamoDB holds ({ITEM_LIMIT_TEXT}): {len(stored)} writes in one call",
                )
        batch.writes = stored
        with self._lock:
            state = self._state.get((thread_id, ns))
            if state is not None:
                state.window[suffix] = item_size(thread_id, sort_key, data)
                if expiry is not None:
                    state.expires[suffix] = expiry
        item = {
            PK: {"S": thread_id},
            SK: {"S": sort_key},
            DATA: {"B": data},
            **self._ttl_attr(expiry),
        }
        if all(w.idx >= 0 for w in stored):
            # First write wins, as in LangGraph's savers: a re-run task (a retry, a fork)
            # must not change writes that later checkpoints were rebuilt from. When an
            # earlier call won, what is stored may differ from this batch, so nothing may
            # be rebuilt from it (ok stays False).
            batch.ok = self._put_item(item, only_new=True)
            if not batch.ok and expiry is not None:
                with self._lock:
                    state = self._state.get((thread_id, ns))
                    if state is not None and suffix in state.expires:
                        # The item that won is older, its ttl unknown here: count it as
                        # expiring, so no checkpoint comes to rely on it (compaction).
                        state.expires[suffix] = 0
        else:
            batch.ok = self._put_item(item)

    def _await_writes(self, thread_id: str, ns: str, checkpoint_id: str) -> bool:
        """LangGraph saves a task's writes and the next checkpoint from different threads,
        so put() can start before that put_writes() has registered. When a list channel
        changed and no write is known yet, give the writer a moment; True if one showed."""
        deadline = time.monotonic() + AWAIT_WRITES_S
        while time.monotonic() < deadline:
            with self._lock:
                by_checkpoint = self._writes.get((thread_id, ns))
                if by_checkpoint and by_checkpoint.get(checkpoint_id):
                    return True
            time.sleep(0.002)
        return False

    def _saved_writes(
        self, thread_id: str, ns: str, checkpoint_id: str
    ) -> builtins.list[StoredWrite]:
        """This saver's writes to a checkpoint that are known to be stored."""
        with self._lock:
            by_checkpoint = self._writes.get((thread_id, ns))
            batches = list(by_checkpoint.get(checkpoint_id, [])) if by_checkpoint else []
        result: builtins.list[StoredWrite] = []
        for batch in batches:
            # A put_writes still in flight: wait for it, the checkpoint may depend on it.
            if batch.done.wait(timeout=60) and batch.ok:
                result.extend(batch.writes)
        return result
