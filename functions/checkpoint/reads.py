"""The read path: one ranged Query per checkpoint, and values rebuilt from their deltas.

The latest checkpoint, its pending writes and every item its values are rebuilt from form one
contiguous key range at the top of the namespace (items sort by checkpoint id, uuid6), so
one descending ``Query`` reads them all (more when the window passes a page).
"""

from __future__ import annotations

import builtins
import copy
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    CheckpointTuple,
    DeltaChannelHistory,
    PendingWrite,
    get_checkpoint_id,
    writes_sort_key,
)

from functions.checkpoint import codec
from functions.checkpoint.codec import (
    EMPTY,
    FROM_WRITES,
    FULL,
    S3_FULL,
    S3_TAIL,
    SIDE,
    TAIL,
    WRITE_VALUE,
    CheckpointRecord,
    StoredWrite,
    Typed,
)
from functions.checkpoint.core import SaverCore
from functions.checkpoint.errors import CheckpointDecodeError, CheckpointError, CheckpointReadError
from functions.checkpoint.layout import (
    AFTER_SEP,
    DATA,
    PK,
    SEP,
    SIDE_SEP,
    SK,
    TASK_REF,
    TOP,
    TTL,
    WINDOW_SLACK,
    item_size,
    namespace_of,
    ns_prefix,
)
from functions.checkpoint.offload import Offload
from functions.checkpoint.state import ObjectMissingError, Resolved, ThreadState, WriteBatch


class Items:
    """Items of one (thread, namespace) read newest first, page by page, on demand."""

    def __init__(
        self,
        saver: SaverCore,
        thread_id: str,
        ns: str,
        *,
        upper: str | None = None,
        first_limit: int | None = None,
    ) -> None:
        self.saver = saver
        self.thread_id = thread_id
        self.ns = ns
        self.prefix = ns_prefix(ns)
        self.upper = upper if upper is not None else self.prefix + TOP
        self.first_limit = first_limit
        self.records: dict[str, CheckpointRecord] = {}
        self.resolved: dict[str, Resolved] = {}
        self.sizes: dict[str, int] = {}  # sort key suffix -> item size
        self.expires: dict[str, int] = {}  # sort key suffix -> ttl, for items with one
        self.writes: dict[str, list[StoredWrite]] = {}
        self.order: list[str] = []  # checkpoint ids, newest first
        self.sort_keys: list[str] = []  # every sort key read, newest first
        self._last_key: dict[str, Any] | None = None
        self._started = False
        self.exhausted = False
        self._floor: str | None = None  # lower bound of the read that exhausted the range

    @property
    def lowest(self) -> str | None:
        return self.sort_keys[-1] if self.sort_keys else None

    def load_page(self, lower: str | None = None) -> None:
        """Read the next page, optionally no lower than ``lower`` (a sort key)."""
        if self.exhausted:
            return
        low = lower if lower is not None else self.prefix
        params: dict[str, Any] = {
            "KeyConditionExpression": "#pk = :pk AND #sk BETWEEN :lo AND :hi",
            "ExpressionAttributeNames": {"#pk": PK, "#sk": SK},
            "ExpressionAttributeValues": {
                ":pk": {"S": self.thread_id},
                ":lo": {"S": low},
                ":hi": {"S": self.upper},
            },
            "ScanIndexForward": False,
            "ConsistentRead": True,
        }
        if not self._started and self.first_limit:
            params["Limit"] = self.first_limit
        if self._last_key is not None:
            params["ExclusiveStartKey"] = self._last_key
        self._started = True
        response = self.saver._query(params)
        # A checkpoint is gone once the retention after its write has passed (its ttl less
        # the margin the saver writes with). Items it is rebuilt from are used whatever their
        # own ttl: put() keeps them alive at least as long (see DynamoDBSaver._ttl_margin).
        hide_before = self.saver._clock() + self.saver._ttl_margin
        for item in response.get("Items", []):
            self._add(item, hide_before)
        self._last_key = response.get("LastEvaluatedKey")
        if self._last_key is None:
            self.exhausted = True
            self._floor = low

    def ensure_down_to(self, sort_key: str) -> None:
        """Keep reading until every item at or above ``sort_key`` is loaded."""
        while self.lowest is None or self.lowest > sort_key:
            if self.exhausted:
                if self._floor is None or self._floor <= sort_key:
                    return
                self._reopen()
            self.load_page(sort_key)

    def load_all(self) -> None:
        self.ensure_down_to(self.prefix)

    def more(self) -> bool:
        """Read the next page of older items; False when there are none."""
        if self.exhausted:
            if self._floor is None or self._floor <= self.prefix:
                return False
            self._reopen()
        self.load_page()
        return True

    def _reopen(self) -> None:
        """A read stopped at a higher floor before: carry on below the lowest item read."""
        self.exhausted = False
        self._last_key = (
            {PK: {"S": self.thread_id}, SK: {"S": self.lowest}} if self.lowest is not None else None
        )

    def _add(self, item: dict[str, Any], hide_before: float) -> None:
        sk: str = item[SK]["S"]
        self.sort_keys.append(sk)
        rest = sk[len(self.prefix) :]
        data: bytes = item[DATA]["B"]
        self.sizes[rest] = item_size(self.thread_id, sk, data)
        expired = False
        if TTL in item:
            self.expires[rest] = int(item[TTL]["N"])
            expired = self.expires[rest] < hide_before
        parts = rest.split(SEP)
        checkpoint_id = parts[0]
        try:
            if len(parts) == 1:
                self.records[checkpoint_id] = CheckpointRecord.decode(data)
                if not expired:  # past its retention: not listed, still a parent to rebuild from
                    self.order.append(checkpoint_id)
            else:
                self.writes.setdefault(checkpoint_id, []).extend(
                    codec.decode_writes(parts[1], data, rest)
                )
        except Exception as exc:
            raise CheckpointDecodeError(self.thread_id, self.ns, checkpoint_id, repr(exc)) from exc

    def latest(self) -> str | None:
        while not self.order and not self.exhausted:
            self.load_page()
        return self.order[0] if self.order else None

    def record(self, checkpoint_id: str) -> CheckpointRecord | None:
        if checkpoint_id not in self.records:
            self.ensure_down_to(self.prefix + checkpoint_id)
        return self.records.get(checkpoint_id)


class ReadPath(Offload):
    """get_tuple / list / DeltaChannel history, and rebuilding values from stored deltas."""

    # The items of the last get_tuple, for the DeltaChannel history read that follows it.
    _last_items: tuple[str, Items] | None

    def _value(
        self, items: Items, checkpoint_id: str, channel: str
    ) -> tuple[Typed | None, str | None]:
        """Serialized value of ``channel`` at a checkpoint, and the oldest checkpoint id its
        rebuild used. Walks the parent chain back to the checkpoint that stored it in full."""
        steps: builtins.list[tuple[str, builtins.list[Any]]] = []
        current: str | None = checkpoint_id
        while current is not None:
            record = items.record(current)
            if record is None:
                if not steps and current == checkpoint_id:
                    return None, None
                raise CheckpointReadError(
                    items.thread_id,
                    items.ns,
                    checkpoint_id,
                    f"checkpoint {current!r} holding part of channel {channel!r} is missing",
                )
            entry = record.blobs.get(channel)
            if entry is None:
                current = record.parent
                continue
            kind = entry[0]
            if kind in (TAIL, S3_TAIL, FROM_WRITES):
                steps.append((current, entry))
                current = record.parent
                continue
            start = current
            if kind == WRITE_VALUE:
                parent = record.parent
                writes = self._referenced(items, parent, channel, entry[1:3])
                if len(writes) != 1 or parent is None:
                    raise CheckpointReadError(
                        items.thread_id, items.ns, current, f"write of {channel!r} is missing"
                    )
                base_value = self._write_value(writes[0])
                if not steps:
                    return base_value, writes[0].sort_key
                return (
                    self._apply_deltas(items, checkpoint_id, channel, base_value, steps),
                    writes[0].sort_key,
                )
            if kind == EMPTY:
                if steps:
                    raise CheckpointDecodeError(
                        items.thread_id, items.ns, checkpoint_id, f"delta of empty {channel!r}"
                    )
                return None, None
            if kind == FULL:
                base: Typed = (codec.type_name(entry[1]), entry[2])
            elif kind == S3_FULL:
                base = (codec.type_name(entry[1]), self._s3_get(entry[2]))
            elif kind == SIDE:
                base = codec.load(entry[1], self._side_get(items, current, channel))
            else:
                raise CheckpointDecodeError(
                    items.thread_id, items.ns, checkpoint_id, f"unknown value kind {kind!r}"
                )
            if not steps:
                return base, start
            return self._apply_deltas(items, checkpoint_id, channel, base, steps), start
        return None, None

    def _side_get(self, items: Items, checkpoint_id: str, channel: str) -> bytes:
        key = {
            PK: {"S": items.thread_id},
            SK: {"S": f"{items.ns}{SIDE_SEP}{checkpoint_id}{SEP}{channel}"},
        }
        try:
            item = self.client.get_item(TableName=self.table_name, Key=key, ConsistentRead=True)
        except ClientError as exc:
            raise self._wrap(exc) from exc
        if "Item" not in item:
            raise CheckpointReadError(
                items.thread_id, items.ns, checkpoint_id, f"stored input {channel!r} is missing"
            )
        data: bytes = item["Item"][DATA]["B"]
        return data

    def _apply_deltas(
        self,
        items: Items,
        checkpoint_id: str,
        channel: str,
        base: Typed,
        steps: builtins.list[tuple[str, builtins.list[Any]]],
    ) -> Typed:
        split = codec.split_array(base[1]) if base[0] == "msgpack" else None
        if split is None:
            raise CheckpointDecodeError(
                items.thread_id, items.ns, checkpoint_id, f"{channel!r} delta on a non-list"
            )
        count, body = split
        parts = [body]
        for at, entry in reversed(steps):
            if entry[0] in (TAIL, S3_TAIL):
                count += entry[1]
                parts.append(entry[2] if entry[0] == TAIL else self._s3_get(entry[2]))
                continue
            record = items.records[at]
            if record.parent is None:
                raise CheckpointDecodeError(
                    items.thread_id, items.ns, at, "writes delta without a parent"
                )
            added = 0
            for write in self._referenced(items, record.parent, channel, entry[2]):
                typed = self._write_value(write)
                elements = codec.as_elements(typed)
                if elements is None:
                    raise CheckpointDecodeError(
                        items.thread_id, items.ns, at, f"{channel!r} write is not msgpack"
                    )
                added += elements[0]
                parts.append(elements[1])
            if added != entry[1]:
                raise CheckpointDecodeError(
                    items.thread_id,
                    items.ns,
                    at,
                    f"{channel!r} expected {entry[1]} appended elements, writes hold {added}",
                )
            count += added
        return "msgpack", codec.array_header(count) + b"".join(parts)

    def _base(self, items: Items, checkpoint_id: str) -> str:
        """A record's base; a diff record with the same base as its parent stores none."""
        return self._base_age(items, checkpoint_id)[0]

    def _base_age(self, items: Items, checkpoint_id: str) -> tuple[str, int]:
        """A record's base and how many parents were walked to find it."""
        current: str | None = checkpoint_id
        age = 0
        while current is not None:
            record = items.record(current)
            if record is None:
                break
            if record.base is not None:
                return record.base, age
            current = record.parent
            age += 1
        raise CheckpointReadError(
            items.thread_id, items.ns, checkpoint_id, f"no base found (reached {current!r})"
        )

    def _resolve(self, items: Items, checkpoint_id: str) -> Resolved:
        """Apply a record's chain of parent diffs (all within its read window)."""
        chain: builtins.list[tuple[str, CheckpointRecord]] = []
        current: str | None = checkpoint_id
        resolved: Resolved | None = None
        while resolved is None:
            if current is None:
                raise CheckpointDecodeError(
                    items.thread_id, items.ns, checkpoint_id, "diff record without a parent"
                )
            if current in items.resolved:
                resolved = items.resolved[current]
                break
            record = items.record(current)
            if record is None:
                raise CheckpointReadError(
                    items.thread_id, items.ns, checkpoint_id, f"ancestor {current!r} is missing"
                )
            if not record.diff:
                if not isinstance(record.channel_versions, dict):
                    raise CheckpointDecodeError(
                        items.thread_id, items.ns, current, "full record without versions"
                    )
                if not isinstance(record.versions_seen, dict) or record.metadata is None:
                    raise CheckpointDecodeError(
                        items.thread_id, items.ns, current, "full record stored as a diff"
                    )
                resolved = Resolved(
                    versions=dict(record.channel_versions),
                    seen={k: dict(v) for k, v in record.versions_seen.items()},
                    metadata=self.serde.loads_typed(record.metadata),
                    updated=self._updated(record),
                    record_start=current,
                )
                items.resolved[current] = resolved
                break
            chain.append((current, record))
            current = record.parent
        for cid, record in reversed(chain):
            versions = dict(resolved.versions)
            changed = record.channel_versions
            if not isinstance(changed, dict):
                # Every channel with a blob moved to this one version (see put()).
                changed = dict.fromkeys(record.blobs, changed)
            for channel, version in changed.items():
                if version is None:
                    versions.pop(channel, None)
                else:
                    versions[channel] = version
            seen = dict(resolved.seen)
            seen_diff = record.versions_seen
            if not isinstance(seen_diff, dict):  # SAME_SEEN
                seen_diff = resolved.seen_diff or {}
            for node, mapping in seen_diff.items():
                if mapping is None:
                    seen.pop(node, None)
                elif mapping == 0:
                    seen[node] = dict(resolved.versions)
                elif mapping == 1:
                    seen[node] = {ch: resolved.versions.get(ch) for ch in resolved.seen[node]}
                else:
                    seen[node] = dict(mapping)
            if record.metadata is None:  # NEXT_STEP: only the step moved on, by one
                metadata = {**resolved.metadata, "step": resolved.metadata["step"] + 1}
            else:
                metadata = {**resolved.metadata, **self.serde.loads_typed(record.metadata)}
            resolved = Resolved(
                versions=versions,
                seen=seen,
                metadata=metadata,
                updated=self._updated(record),
                record_start=resolved.record_start,
                seen_diff=seen_diff,
            )
            items.resolved[cid] = resolved
        return resolved

    @staticmethod
    def _updated(record: CheckpointRecord) -> builtins.list[str] | None:
        if record.updated_channels == 1:
            return sorted(record.blobs)
        return record.updated_channels  # type: ignore[return-value]

    def _referenced(
        self, items: Items, checkpoint_id: str | None, channel: str, refs: builtins.list[Any]
    ) -> builtins.list[StoredWrite]:
        """The writes to ``channel`` at a checkpoint named by (task id prefix, idx) pairs."""
        if checkpoint_id is None:
            return []
        wanted = {(refs[i], refs[i + 1]) for i in range(0, len(refs), 2)}
        return [
            w
            for w in self._sorted_writes(items.writes.get(checkpoint_id, []))
            if w.channel == channel and (w.task_id[:TASK_REF], w.idx) in wanted
        ]

    @staticmethod
    def _sorted_writes(writes: builtins.list[StoredWrite]) -> builtins.list[StoredWrite]:
        return sorted(writes, key=lambda w: writes_sort_key(w.task_path, w.task_id, w.idx))

    def _write_value(self, write: StoredWrite) -> Typed:
        if write.data is None:
            assert write.s3_key is not None
            # Kept: the next put() compares appended elements with it (see _delta_entry).
            write.data = self._s3_get(write.s3_key)
        return write.type_, write.data

    def _tuple(self, items: Items, checkpoint_id: str, *, remember: bool) -> CheckpointTuple | None:
        record = items.record(checkpoint_id)
        if record is None:
            return None
        base, base_age = self._base_age(items, checkpoint_id)
        items.ensure_down_to(items.prefix + base)
        values: dict[str, Typed | None] = {}
        starts: dict[str, str] = {}
        try:
            resolved = self._resolve(items, checkpoint_id)
            for channel in resolved.versions:
                typed, start = self._value(items, checkpoint_id, channel)
                values[channel] = typed
                if start is not None:
                    starts[channel] = start
            channel_values = {
                ch: self.serde.loads_typed(typed)
                for ch, typed in values.items()
                if typed is not None
            }
            writes = self._sorted_writes(items.writes.get(checkpoint_id, []))
            pending: builtins.list[PendingWrite] = [
                (w.task_id, w.channel, self.serde.loads_typed(self._write_value(w))) for w in writes
            ]
            extra = self.serde.loads_typed(record.extra) if record.extra is not None else {}
        except (CheckpointError, ClientError, BotoCoreError):
            raise  # already says what failed; AWS errors stay retryable as they are
        except ObjectMissingError as exc:
            raise CheckpointReadError(items.thread_id, items.ns, checkpoint_id, str(exc)) from exc
        except Exception as exc:
            raise CheckpointDecodeError(
                items.thread_id, items.ns, checkpoint_id, repr(exc)
            ) from exc
        checkpoint: dict[str, Any] = {
            **extra,
            "v": record.v,
            "id": checkpoint_id,
            "ts": record.ts,
            "channel_values": channel_values,
            "channel_versions": dict(resolved.versions),
            "versions_seen": {k: dict(v) for k, v in resolved.seen.items()},
            "updated_channels": list(resolved.updated) if resolved.updated is not None else None,
        }
        if remember:
            window = {sk: size for sk, size in items.sizes.items() if sk >= base}
            expires = {sk: ttl for sk, ttl in items.expires.items() if sk >= base}
            state = ThreadState(
                checkpoint_id=checkpoint_id,
                base=base,
                values=values,
                starts=starts,
                resolved=resolved,
                window=window,
                base_age=base_age,
                expires=expires,
            )
            batch = WriteBatch(writes=list(writes), ok=True)
            batch.done.set()
            with self._lock:
                self._remember(items.thread_id, items.ns, state)
                self._writes[(items.thread_id, items.ns)] = OrderedDict({checkpoint_id: [batch]})
                self._writes.move_to_end((items.thread_id, items.ns))
                self._trim()
        config: RunnableConfig = {
            "configurable": {
                "thread_id": items.thread_id,
                "checkpoint_ns": items.ns,
                "checkpoint_id": checkpoint_id,
            }
        }
        parent_config: RunnableConfig | None = None
        if record.parent is not None:
            parent_config = {
                "configurable": {
                    "thread_id": items.thread_id,
                    "checkpoint_ns": items.ns,
                    "checkpoint_id": record.parent,
                }
            }
        return CheckpointTuple(
            config=config,
            checkpoint=checkpoint,  # type: ignore[arg-type]
            # A deep copy: the resolved metadata stays cached (put() diffs against it), and
            # callers may mutate what they get (nested values such as ``parents`` included).
            metadata=copy.deepcopy(resolved.metadata),  # type: ignore[arg-type]
            parent_config=parent_config,
            pending_writes=pending,
        )

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint named by ``config`` (or the thread's latest), with its pending writes.

        One ``Query`` in the common case: the newest items of the namespace down to the
        oldest one the checkpoint's values are rebuilt from.
        """
        configurable = config["configurable"]
        thread_id: str = configurable["thread_id"]
        ns: str = configurable.get("checkpoint_ns", "")
        checkpoint_id = get_checkpoint_id(config)
        prefix = ns_prefix(ns)
        upper = prefix + checkpoint_id + AFTER_SEP if checkpoint_id else None
        limit = self.read_items
        with self._lock:
            state = self._state.get((thread_id, ns))
            if state is not None and checkpoint_id in (None, state.checkpoint_id):
                # This saver wrote or read the thread last: it knows how many items the
                # window holds, so the read need not over-read below it.
                limit = min(limit, len(state.window) + WINDOW_SLACK)
        items = Items(self, thread_id, ns, upper=upper, first_limit=limit)
        target = items.latest()
        if target is None or (checkpoint_id is not None and target != checkpoint_id):
            return None
        result = self._tuple(items, target, remember=True)
        with self._lock:
            # LangGraph asks for DeltaChannel history right after loading a checkpoint:
            # serve it from the items this read already holds.
            self._last_items = (target, items)
        return result

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first, filtered by metadata, ``before`` a checkpoint, up to ``limit``."""
        if limit is not None and limit <= 0:
            return
        if config is None:
            groups = self._scan_groups()
        else:
            configurable = config["configurable"]
            thread_id = configurable["thread_id"]
            ns = configurable.get("checkpoint_ns")
            namespaces = [ns] if ns is not None else self._namespaces(thread_id)
            groups = [(thread_id, n) for n in namespaces]
        wanted_id = get_checkpoint_id(config) if config else None
        before_id = get_checkpoint_id(before) if before else None
        remaining = limit
        for thread_id, ns in groups:
            prefix = ns_prefix(ns)
            upper = prefix + before_id if before_id else None
            items = Items(self, thread_id, ns, upper=upper)
            index = 0
            while True:
                while index >= len(items.order) and items.more():
                    pass
                if index >= len(items.order):
                    break
                checkpoint_id = items.order[index]
                index += 1
                if before_id is not None and checkpoint_id >= before_id:
                    continue
                if wanted_id is not None and checkpoint_id != wanted_id:
                    continue
                if filter:
                    items.ensure_down_to(items.prefix + self._base(items, checkpoint_id))
                    metadata = self._resolve(items, checkpoint_id).metadata
                    if not all(metadata.get(k) == v for k, v in filter.items()):
                        continue
                result = self._tuple(items, checkpoint_id, remember=False)
                if result is None:
                    continue
                yield result
                if remaining is not None:
                    remaining -= 1
                    if remaining <= 0:
                        return

    def _namespaces(self, thread_id: str) -> builtins.list[str]:
        namespaces: set[str] = set()
        for item in self._all_items(thread_id, projection=True):
            namespaces.add(namespace_of(item[SK]["S"]))
        # Root first, then children, as a stable order.
        return sorted(namespaces)

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> dict[str, DeltaChannelHistory]:
        """Per-channel writes since the nearest stored value, from one ranged read of the
        namespace rather than one ``get_tuple`` per ancestor (``DeltaChannel`` support)."""
        if not channels:
            return {}
        configurable = config["configurable"]
        thread_id: str = configurable["thread_id"]
        ns: str = configurable.get("checkpoint_ns", "")
        checkpoint_id = get_checkpoint_id(config)
        prefix = ns_prefix(ns)
        upper = prefix + checkpoint_id + AFTER_SEP if checkpoint_id else None
        with self._lock:
            # Taken, not shared: Items loads pages into its own dicts as it goes, so two
            # threads must never walk the same one.
            cached, self._last_items = self._last_items, None
        if (
            cached is not None
            and checkpoint_id == cached[0]
            and (cached[1].thread_id, cached[1].ns) == (thread_id, ns)
        ):
            target: str | None = cached[0]
            items = cached[1]
        else:
            items = Items(self, thread_id, ns, upper=upper)
            target = items.latest()
        collected: dict[str, builtins.list[PendingWrite]] = {c: [] for c in channels}
        seeds: dict[str, Any] = {}
        remaining = set(channels)
        record = items.record(target) if target is not None else None
        cursor = record.parent if record is not None else None
        while cursor is not None and remaining:
            # Walk back page by page, not one query per ancestor.
            while cursor not in items.records and items.more():
                pass
            ancestor = items.record(cursor)
            if ancestor is None:
                break
            for write in reversed(self._sorted_writes(items.writes.get(cursor, []))):
                if write.channel in remaining:
                    value = self.serde.loads_typed(self._write_value(write))
                    collected[write.channel].append((write.task_id, write.channel, value))
            items.ensure_down_to(items.prefix + self._base(items, cursor))
            ancestor_versions = self._resolve(items, cursor).versions
            for channel in list(remaining):
                if channel not in ancestor_versions:
                    continue
                typed, _ = self._value(items, cursor, channel)
                if typed is not None:
                    seeds[channel] = self.serde.loads_typed(typed)
                    remaining.discard(channel)
            cursor = ancestor.parent
        result: dict[str, DeltaChannelHistory] = {}
        for channel in channels:
            entry: DeltaChannelHistory = {"writes": list(reversed(collected[channel]))}
            if channel in seeds:
                entry["seed"] = seeds[channel]
            result[channel] = entry
        return result
