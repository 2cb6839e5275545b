"""The item encoding's exactness: every shortening must read back to the very same values."""

from __future__ import annotations

import os
import uuid

from functions.checkpoint import codec
from functions.checkpoint.codec import FULL, CheckpointRecord


def test_uuid_task_ids_fit_21_characters_and_round_trip_exactly() -> None:
    # GIVEN canonical uuids (extremes included) and task ids that are not canonical uuids
    uuids = [str(uuid.uuid4()) for _ in range(500)]
    uuids += ["00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff"]
    others = ["task-1", "", "x" * 36, str(uuid.uuid4()).upper(), str(uuid.uuid4()).replace("-", "")]

    # WHEN each is written as a sort key part and read back
    keys = {task: codec.task_key(task) for task in uuids + others}

    # THEN uuids take 21 printable characters (no separator), the rest are kept as they are,
    # and every one reads back exactly
    assert all(len(keys[t]) == 21 and min(keys[t][1:]) >= " " for t in uuids)
    assert all(keys[t] == t for t in others)
    assert all(codec.task_from_key(k) == t for t, k in keys.items())
    assert len(set(keys.values())) == len(keys)


def test_values_are_deflated_only_when_that_makes_them_smaller() -> None:
    # GIVEN a repetitive value, a random one and a short one
    text = b"the agent wrote a note about the report. " * 40
    noise = os.urandom(2048)

    # WHEN they are prepared for storage with a 512-byte threshold
    stored = {name: codec.store(0, data, 512) for name, data in [("text", text), ("noise", noise)]}

    # THEN only the text is deflated (and flagged); each loads back to the serializer's form
    assert stored["text"][0] == codec.COMPRESSED
    assert len(stored["text"][1]) < len(text) // 4
    assert stored["noise"] == (0, noise)
    assert codec.store(0, text[:100], 512) == (0, text[:100])
    assert codec.store(0, text, None) == (0, text)
    assert codec.load(*stored["text"]) == ("msgpack", text)
    assert codec.load(*stored["noise"]) == ("msgpack", noise)


def test_records_round_trip_compressed_and_old_string_ids_still_read() -> None:
    # GIVEN a record with a compressible full value, uuid parent and a floor-style base
    parent = str(uuid.uuid4())
    record = CheckpointRecord(
        parent=parent,
        ts="2026-11-22T03:00:00.123456+00:00",
        v=4,
        channel_versions={"doc": 3},
        versions_seen={"node": {"doc": 2}},
        updated_channels=["doc"],
        metadata=("msgpack", b"\x80"),
        base=parent + "\x1f",
        blobs={"doc": [FULL, 0, b"\xa5hello" * 200]},
    )

    # WHEN it is encoded with compression and decoded
    data = record.encode(compress_min=512)
    decoded = CheckpointRecord.decode(data)

    # THEN it is the same record, and smaller than uncompressed
    assert decoded == record
    assert len(data) < len(record.encode()) // 4
    # AND items written before ids were stored as bytes (strings) still decode
    old = codec.pack([1, parent, 1, 4, {"doc": 3}, {}, None, [0, b"\x80"], parent, {}, None])
    assert CheckpointRecord.decode(old).parent == parent
