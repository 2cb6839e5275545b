"""S3 offload: values too large for an item go to the payload bucket, largest first."""

from __future__ import annotations

import builtins
import hashlib
from typing import Any
from urllib.parse import quote

from botocore.exceptions import ClientError

from functions.checkpoint import codec
from functions.checkpoint.codec import FULL, S3_FULL, S3_TAIL, TAIL, CheckpointRecord, StoredWrite
from functions.checkpoint.core import SaverCore
from functions.checkpoint.errors import (
    CheckpointBucketMissingError,
    CheckpointTooLargeError,
    CheckpointWriteError,
)
from functions.checkpoint.layout import DATA, ITEM_BUDGET, SEP, SK, is_side
from functions.checkpoint.state import ObjectMissingError, Target


class Offload(SaverCore):
    """Putting values in S3, reading them back, and keeping the bucket in step with items."""

    def _s3_put(self, target: Target, part: str, key: str, data: bytes) -> None:
        """Store ``part`` (what the value is, for errors) of ``target`` in S3."""
        if self.s3 is None or self.bucket_name is None:
            raise CheckpointTooLargeError(target.thread_id, target.ns, target.what, part, len(data))
        try:
            self.s3.put_object(Bucket=self.bucket_name, Key=key, Body=data)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "NoSuchBucket":
                raise CheckpointWriteError(
                    target.thread_id,
                    target.ns,
                    target.what,
                    f"{part} goes to S3, and {CheckpointBucketMissingError(self.bucket_name)}",
                ) from exc
            raise

    def _s3_get(self, key: str) -> bytes:
        if self.s3 is None or self.bucket_name is None:
            raise CheckpointBucketMissingError(None, f"reading {key}")
        try:
            body = self.s3.get_object(Bucket=self.bucket_name, Key=key)["Body"]
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code == "NoSuchBucket":
                raise CheckpointBucketMissingError(self.bucket_name) from exc
            if code in ("NoSuchKey", "404"):
                raise ObjectMissingError(key) from exc
            raise
        data: bytes = body.read()
        return data

    def _s3_delete_prefix(self, prefix: str, keep: set[str] | None = None) -> None:
        if self.s3 is None or self.bucket_name is None:
            return
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket_name, Prefix=prefix):
            keys = [o["Key"] for o in page.get("Contents", []) if o["Key"] not in (keep or set())]
            for start in range(0, len(keys), 1000):
                chunk = keys[start : start + 1000]
                self.s3.delete_objects(
                    Bucket=self.bucket_name,
                    Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
                )

    def _s3_copy(self, source: str, target: str) -> None:
        assert self.s3 is not None
        self.s3.copy_object(
            Bucket=self.bucket_name,
            Key=target,
            CopySource={"Bucket": self.bucket_name, "Key": source},
        )

    @staticmethod
    def _s3_prefix(thread_id: str) -> str:
        return f"{quote(thread_id, safe='')}/"

    def _s3_key(self, thread_id: str, ns: str, checkpoint_id: str, name: str) -> str:
        return (
            f"{self._s3_prefix(thread_id)}{quote(ns, safe='')}/{checkpoint_id}/"
            f"{quote(name, safe='')}"
        )

    def _offload(
        self,
        target: Target,
        checkpoint_id: str,
        blobs: dict[str, builtins.list[Any]],
        budget: int = ITEM_BUDGET,
    ) -> bool:
        """Move the largest inline values (full values and appended tails) to S3 until the
        rest take at most ``budget`` bytes; True if any moved."""
        sizes = {ch: len(e[2]) for ch, e in blobs.items() if e[0] in (FULL, TAIL)}
        total = sum(sizes.values())
        moved = False
        for channel, size in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])):
            if total <= budget:
                break
            entry = blobs[channel]
            if entry[0] == FULL:
                key = self._s3_key(target.thread_id, target.ns, checkpoint_id, f"c{SEP}{channel}")
                self._s3_put(target, f"the value of channel {channel!r}", key, entry[2])
                blobs[channel] = [S3_FULL, entry[1], key]
            else:
                key = self._s3_key(target.thread_id, target.ns, checkpoint_id, f"t{SEP}{channel}")
                self._s3_put(target, f"what was appended to channel {channel!r}", key, entry[2])
                blobs[channel] = [S3_TAIL, entry[1], key]
            total -= size
            moved = True
        return moved

    def _offload_writes(
        self,
        target: Target,
        checkpoint_id: str,
        stored: builtins.list[StoredWrite],
        budget: int = ITEM_BUDGET,
    ) -> bool:
        """Move the largest write values to S3 until the inline ones take at most ``budget``
        bytes; True if any moved. The bytes stay in memory (append detection uses them)."""
        inline = [w for w in stored if w.s3_key is None and w.data is not None]
        total = sum(len(w.data or b"") for w in inline)
        moved = False
        for write in sorted(inline, key=lambda w: -len(w.data or b"")):
            if total <= budget:
                break
            assert write.data is not None
            # The content's digest in the key: a re-run task writing another value under the
            # same (task, idx) loses the conditional put and must not overwrite the object
            # the first write's item points at.
            digest = hashlib.blake2b(write.data, digest_size=8).hexdigest()
            key = self._s3_key(
                target.thread_id,
                target.ns,
                checkpoint_id,
                f"w{SEP}{write.task_id}{SEP}{write.idx}{SEP}{digest}",
            )
            part = f"the write to channel {write.channel!r} (index {write.idx})"
            self._s3_put(target, part, key, write.data)
            write.s3_key = key
            total -= len(write.data)
            moved = True
        return moved

    def _copy_s3_refs(self, data: bytes, sk: str, source: str, target: str) -> bytes:
        if self.s3 is None:
            return data
        old_prefix, new_prefix = self._s3_prefix(source), self._s3_prefix(target)

        def moved(key: str) -> str:
            new_key = new_prefix + key[len(old_prefix) :]
            self._s3_copy(key, new_key)
            return new_key

        if is_side(sk):
            return data
        rest = sk.partition(SEP)[2]
        if SEP in rest:
            task_path, entries = codec.unpack(data)
            changed = False
            for e in entries:
                if len(e) > 4:
                    e[4] = moved(e[4])
                    changed = True
            return codec.pack([task_path, entries]) if changed else data
        record = CheckpointRecord.decode(data)
        changed = False
        for entry in record.blobs.values():
            if entry[0] in (S3_FULL, S3_TAIL):
                entry[2] = moved(entry[2])
                changed = True
        return record.encode(self.compress_min_bytes) if changed else data

    def _referenced_s3(self, thread_id: str) -> set[str]:
        if self.s3 is None:
            return set()
        keys: set[str] = set()
        for item in self._all_items(thread_id):
            sk = item[SK]["S"]
            data = item[DATA]["B"]
            if is_side(sk):
                continue
            if SEP in sk.partition(SEP)[2]:
                _, entries = codec.unpack(data)
                keys.update(e[4] for e in entries if len(e) > 4)
            else:
                record = CheckpointRecord.decode(data)
                keys.update(e[2] for e in record.blobs.values() if e[0] in (S3_FULL, S3_TAIL))
        return keys
