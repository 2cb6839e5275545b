"""Thread management: delete, copy, prune, delete runs — keeping what remains readable."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from functions.checkpoint import codec
from functions.checkpoint.codec import EMPTY, FULL, CheckpointRecord
from functions.checkpoint.layout import (
    DATA,
    PK,
    SEP,
    SIDE_SEP,
    SK,
    ns_prefix,
)
from functions.checkpoint.reads import Items
from functions.checkpoint.state import Target
from functions.checkpoint.writes import WritePath


class Maintenance(WritePath):
    """Whole-thread operations (admin and housekeeping), not on a step's path."""

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, write and S3 object of a thread."""
        items = self._all_items(thread_id, projection=True)
        self._batch_write([{"DeleteRequest": {"Key": {PK: i[PK], SK: i[SK]}}} for i in items])
        self._s3_delete_prefix(self._s3_prefix(thread_id))
        with self._lock:
            for key in [k for k in self._state if k[0] == thread_id]:
                del self._state[key]

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and write of a thread (S3 objects included) to another."""
        expiry = self._expiry(self._clock())
        requests: builtins.list[dict[str, Any]] = []
        for item in self._all_items(source_thread_id):
            sk = item[SK]["S"]
            data = self._copy_s3_refs(item[DATA]["B"], sk, source_thread_id, target_thread_id)
            requests.append(
                {
                    "PutRequest": {
                        "Item": {
                            PK: {"S": target_thread_id},
                            SK: {"S": sk},
                            DATA: {"B": data},
                            # One expiry for the whole copy: every item outlives what reads it.
                            **self._ttl_attr(expiry),
                        }
                    }
                }
            )
        self._batch_write(requests)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``keep_latest``: keep each namespace's latest checkpoint (stored self-contained)
        and its writes; ``delete``: remove the threads entirely."""
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"unknown prune strategy {strategy!r}")
        for thread_id in thread_ids:
            if strategy == "delete":
                self.delete_thread(thread_id)
                continue
            keep: set[str] = set()
            doomed: builtins.list[str] = []
            for ns in self._namespaces(thread_id):
                items = Items(self, thread_id, ns)
                items.load_all()
                latest = items.latest()
                if latest is None:
                    continue
                self._rewrite_full(items, latest)
                doomed.extend(self._side_keys(thread_id, ns))  # the latest is inline now
                prefix = ns_prefix(ns)
                kept_prefix = prefix + latest
                for sk in items.sort_keys:
                    if sk == kept_prefix or sk.startswith(kept_prefix + SEP):
                        keep.add(sk)
                    else:
                        doomed.append(sk)
            self._delete_keys(thread_id, doomed)
            self._s3_delete_prefix(self._s3_prefix(thread_id), keep=self._referenced_s3(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) created by the given runs; later
        checkpoints that were rebuilt from them are first re-stored self-contained."""
        if not run_ids:
            return
        wanted = set(run_ids)
        for thread_id, ns in self._scan_groups():
            items = Items(self, thread_id, ns)
            items.load_all()
            doomed_ids = {
                cid
                for cid in items.records
                if self._resolve(items, cid).metadata.get("run_id") in wanted
            }
            if not doomed_ids:
                continue
            oldest_doomed = min(doomed_ids)
            rewritten: set[str] = set()
            for cid in sorted(items.records):
                record = items.records[cid]
                depends = self._base(items, cid) <= max(doomed_ids) and cid > oldest_doomed
                # A SAME_SEEN record repeats its parent's raw diff, which a full rewrite of
                # the parent drops: re-store it in full too (the resolve below still reads
                # the old items, which are in memory).
                repeats = record.parent in rewritten and not isinstance(record.versions_seen, dict)
                if cid not in doomed_ids and (depends or repeats):
                    self._rewrite_full(items, cid)
                    rewritten.add(cid)
            prefix = ns_prefix(ns)
            doomed = [
                sk for sk in items.sort_keys if sk[len(prefix) :].split(SEP, 1)[0] in doomed_ids
            ]
            doomed.extend(
                sk
                for sk in self._side_keys(thread_id, ns)
                if sk.split(SIDE_SEP, 1)[1].split(SEP, 1)[0] in doomed_ids
            )
            self._delete_keys(thread_id, doomed)
            self._s3_delete_prefix(self._s3_prefix(thread_id), keep=self._referenced_s3(thread_id))

    def _rewrite_full(self, items: Items, checkpoint_id: str) -> None:
        """Re-store a checkpoint with every value in full, so it depends on no other item."""
        record = items.records[checkpoint_id]
        resolved = self._resolve(items, checkpoint_id)
        blobs: dict[str, builtins.list[Any]] = {}
        for channel in resolved.versions:
            typed, _ = self._value(items, checkpoint_id, channel)
            if typed is None:
                blobs[channel] = [EMPTY]
            else:
                blobs[channel] = [FULL, codec.type_code(typed[0]), typed[1]]
        full = CheckpointRecord(
            parent=record.parent,
            ts=record.ts,
            v=record.v,
            channel_versions=resolved.versions,
            versions_seen=resolved.seen,
            updated_channels=resolved.updated,
            metadata=self.serde.dumps_typed(resolved.metadata),
            base=checkpoint_id,
            blobs=blobs,
            extra=record.extra,
        )
        sort_key = items.prefix + checkpoint_id
        target = Target(items.thread_id, items.ns, f"checkpoint {checkpoint_id!r} (in full)")
        data = self._encode_record(target, checkpoint_id + "-full", full, sort_key)
        self._put_item(
            {
                PK: {"S": items.thread_id},
                SK: {"S": sort_key},
                DATA: {"B": data},
                # Its own retention is kept: pruning or deleting runs does not extend it.
                **self._ttl_attr(items.expires.get(checkpoint_id)),
            }
        )
        with self._lock:
            self._state.pop((items.thread_id, items.ns), None)

    def _delete_keys(self, thread_id: str, sort_keys: builtins.list[str]) -> None:
        self._batch_write(
            [{"DeleteRequest": {"Key": {PK: {"S": thread_id}, SK: {"S": sk}}}} for sk in sort_keys]
        )
        with self._lock:
            for key in [k for k in self._state if k[0] == thread_id]:
                del self._state[key]
