"""Compact encoding of checkpoint items.

Every superstep writes one checkpoint item and one item per task, so every byte repeated in
them is paid on every step. Records are positional msgpack lists, serializer type names are
one-byte codes, and list channels that only grew are stored as the bytes that were appended.

Appends are detected on the serialized form: LangGraph's serializer encodes a list as a
msgpack array header followed by its elements, each encoded on its own, so a list that only
grew serializes to the old body followed by the new elements' bytes. Comparing bytes also
catches an element changed in place, which comparing objects would not.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import ormsgpack

# Serializer type names <-> one-byte codes; unknown names are stored as strings.
_TYPE_CODES: dict[str, int] = {
    "msgpack": 0,
    "null": 1,
    "bytes": 2,
    "bytearray": 3,
    "json": 4,
    "pickle": 5,
}
_CODE_TYPES = {code: name for name, code in _TYPE_CODES.items()}

RECORD_FORMAT = 1  # a full record
RECORD_DIFF = 2  # a record stored as changes against its parent

# Blob entry kinds inside a checkpoint record.
EMPTY = 0  # the channel has this version but no value
FULL = 1  # [FULL, type, bytes]
TAIL = 2  # [TAIL, count, body]: parent value + these appended elements
FROM_WRITES = 3  # [FROM_WRITES, count, refs]: parent value + the parent's writes named by refs
S3_FULL = 4  # [S3_FULL, type, key]: full value stored in S3
WRITE_VALUE = 5  # [WRITE_VALUE, task ref, idx]: the value one parent write stored
SIDE = 6  # [SIDE, type]: full value in the checkpoint's side item (a graph input)
S3_TAIL = 7  # [S3_TAIL, count, key]: parent value + the appended elements stored in S3

# A diff record's versions_seen when it is the same diff as its parent record's.
SAME_SEEN = 2

Typed = tuple[str, bytes]


# A type code with this bit set: the stored bytes are the value deflated (zlib).
COMPRESSED = 0x40
_LEVEL = 6


def store(code: int | str, data: bytes, min_bytes: int | None) -> tuple[int | str, bytes]:
    """(code, bytes) as stored: deflated, with the flag in the code, when the value is at
    least ``min_bytes`` long and deflating actually makes it smaller; else unchanged.
    Types stored by name (unknown to the code table) are never deflated."""
    if min_bytes is None or not isinstance(code, int) or len(data) < min_bytes:
        return code, data
    packed = zlib.compress(data, _LEVEL)
    if len(packed) >= len(data):
        return code, data
    return code | COMPRESSED, packed


def load(code: int | str, data: bytes) -> Typed:
    """The serializer's (type, bytes) of a stored (code, bytes)."""
    if isinstance(code, int) and code & COMPRESSED:
        return type_name(code & ~COMPRESSED), zlib.decompress(data)
    return type_name(code), data


def type_code(type_: str) -> int | str:
    return _TYPE_CODES.get(type_, type_)


def type_name(code: int | str) -> str:
    if isinstance(code, str):
        return code
    return _CODE_TYPES[code]


def pack(obj: Any) -> bytes:
    return ormsgpack.packb(obj)


def unpack(data: bytes) -> Any:
    return ormsgpack.unpackb(data)


def split_array(data: bytes) -> tuple[int, bytes] | None:
    """(element count, elements' bytes) of a msgpack array, or None if ``data`` is not one."""
    if not data:
        return None
    head = data[0]
    if 0x90 <= head <= 0x9F:
        return head & 0x0F, data[1:]
    if head == 0xDC and len(data) >= 3:
        return struct.unpack(">H", data[1:3])[0], data[3:]
    if head == 0xDD and len(data) >= 5:
        return struct.unpack(">I", data[1:5])[0], data[5:]
    return None


def array_header(count: int) -> bytes:
    if count < 16:
        return bytes([0x90 | count])
    if count < 0x10000:
        return b"\xdc" + struct.pack(">H", count)
    return b"\xdd" + struct.pack(">I", count)


def as_elements(typed: Typed) -> tuple[int, bytes] | None:
    """A serialized write as list elements: a list is its elements, anything else is one."""
    type_, data = typed
    if type_ != "msgpack":
        return None
    split = split_array(data)
    if split is not None:
        return split
    return 1, data


def encode_id(value: str | None) -> str | bytes | None:
    """A canonical (lowercase, dashed) uuid as its 16 bytes: 18 stored bytes instead of 37.
    Anything else (a sort key floor, a caller's own id) stays a string."""
    if value is None or len(value) != 36:
        return value
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return value
    return parsed.bytes if str(parsed) == value else value


def decode_id(value: str | bytes | None) -> str | None:
    if isinstance(value, bytes):
        return str(uuid.UUID(bytes=value))
    return value


# A writes item's sort key names its task. LangGraph's task ids are canonical uuids: written
# as 20 printable ASCII characters (base 95) after a marker instead of 36, which every read
# of the thread pays for once per step. Other task ids are kept as they are.
TASK_KEY_MARK = "\x1d"
_KEY_DIGITS = "".join(chr(c) for c in range(0x20, 0x7F))
_KEY_WIDTH = 20  # 95**20 > 2**128


def task_key(task_id: str) -> str:
    encoded = encode_id(task_id)
    if not isinstance(encoded, bytes):
        return task_id
    number = int.from_bytes(encoded, "big")
    digits = []
    for _ in range(_KEY_WIDTH):
        number, digit = divmod(number, len(_KEY_DIGITS))
        digits.append(_KEY_DIGITS[digit])
    return TASK_KEY_MARK + "".join(reversed(digits))


def task_from_key(key: str) -> str:
    if not key.startswith(TASK_KEY_MARK):
        return key
    number = 0
    for char in key[1:]:
        number = number * len(_KEY_DIGITS) + _KEY_DIGITS.index(char)
    return str(uuid.UUID(int=number))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_ts(ts: str) -> int | str:
    """An ISO-8601 UTC timestamp as integer microseconds (9 bytes instead of 33) when that
    round-trips to the very same string, else the string itself."""
    try:
        parsed = datetime.fromisoformat(ts)
    except ValueError:
        return ts
    if parsed.tzinfo != UTC:
        return ts
    micros = (parsed - _EPOCH) // timedelta(microseconds=1)
    return micros if decode_ts(micros) == ts else ts


def decode_ts(value: int | str) -> str:
    if isinstance(value, str):
        return value
    return (_EPOCH + timedelta(microseconds=value)).isoformat()


@dataclass
class CheckpointRecord:
    """What a checkpoint item holds (the checkpoint id is its sort key).

    A *diff* record stores ``channel_versions``, ``versions_seen`` and ``metadata`` as
    changes against its parent's (resolved) record; a full record stores them whole.
    In a diff: a version or node mapped to None was removed; a node mapped to 0 saw exactly
    the parent's channel versions, mapped to 1 the same channels as before at the parent's
    versions. ``updated_channels`` 1 means "the channels in blobs".
    """

    parent: str | None
    ts: str
    v: int
    # In a diff record: the changes, or one version that every channel in blobs moved to.
    channel_versions: dict[str, Any] | int | float | str
    versions_seen: dict[str, Any] | int  # int in a diff: SAME_SEEN
    updated_channels: list[str] | int | None
    metadata: Typed | None  # None in a diff: only the step moved on, by one
    # Sort key (after the namespace prefix) of the oldest item the values need; None in a
    # diff record whose base is its parent's.
    base: str | None
    blobs: dict[str, list[Any]] = field(default_factory=dict)
    extra: Typed | None = None  # any other checkpoint keys, serialized
    diff: bool = False

    def encode(self, compress_min: int | None = None) -> bytes:
        blobs = self.blobs
        if compress_min is not None:
            blobs = {
                ch: [FULL, *store(e[1], e[2], compress_min)] if e[0] == FULL else e
                for ch, e in blobs.items()
            }
        return pack(
            [
                RECORD_DIFF if self.diff else RECORD_FORMAT,
                encode_id(self.parent),
                encode_ts(self.ts),
                self.v,
                self.channel_versions,
                self.versions_seen,
                self.updated_channels,
                None if self.metadata is None else [type_code(self.metadata[0]), self.metadata[1]],
                encode_id(self.base),
                blobs,
                None if self.extra is None else [type_code(self.extra[0]), self.extra[1]],
            ]
        )

    @classmethod
    def decode(cls, data: bytes) -> CheckpointRecord:
        fields = unpack(data)
        if not isinstance(fields, list) or fields[0] not in (RECORD_FORMAT, RECORD_DIFF):
            raise ValueError(f"unknown checkpoint record format {fields[0]!r}")
        fmt, parent, ts, v, versions, seen, updated, md, base, blobs, extra = fields
        for channel, entry in blobs.items():
            if entry[0] == FULL and isinstance(entry[1], int) and entry[1] & COMPRESSED:
                type_, data = load(entry[1], entry[2])
                blobs[channel] = [FULL, type_code(type_), data]
        return cls(
            parent=decode_id(parent),
            ts=decode_ts(ts),
            v=v,
            channel_versions=versions,
            versions_seen=seen,
            updated_channels=updated,
            metadata=None if md is None else (type_name(md[0]), md[1]),
            base=decode_id(base),
            blobs=blobs,
            extra=None if extra is None else (type_name(extra[0]), extra[1]),
            diff=fmt == RECORD_DIFF,
        )


@dataclass
class StoredWrite:
    task_id: str
    task_path: str
    idx: int
    channel: str
    type_: str
    # None when the value lives in S3 and was not fetched yet; an S3 write this saver
    # stored or fetched keeps its bytes here too.
    data: bytes | None
    s3_key: str | None = None
    sort_key: str = ""  # of the item holding it, after the namespace prefix


# Most task paths are LangGraph's pull tasks: store that common prefix as one byte.
_PULL_PREFIX = "~__pregel_pull, "


def encode_writes(
    task_path: str, writes: list[StoredWrite], compress_min: int | None = None
) -> bytes:
    entries: list[list[Any]] = []
    for w in writes:
        # A write moved to S3 keeps its bytes in memory (append detection compares them)
        # but stores only its key.
        code, data = type_code(w.type_), None if w.s3_key is not None else w.data
        if data is not None:
            code, data = store(code, data, compress_min)
        entry: list[Any] = [w.idx, w.channel, code, data]
        if w.s3_key is not None:
            entry.append(w.s3_key)
        entries.append(entry)
    if task_path.startswith(_PULL_PREFIX):
        task_path = "\x00" + task_path[len(_PULL_PREFIX) :]
    return pack([task_path, entries])


def decode_writes(task_key_part: str, data: bytes, sort_key: str = "") -> list[StoredWrite]:
    """The writes of one writes item; ``task_key_part`` is the task part of its sort key."""
    task_id = task_from_key(task_key_part)
    task_path, entries = unpack(data)
    if task_path.startswith("\x00"):
        task_path = _PULL_PREFIX + task_path[1:]
    writes: list[StoredWrite] = []
    for e in entries:
        value: bytes | None = e[3]
        if value is None:  # in S3
            type_ = type_name(e[2])
        else:
            type_, value = load(e[2], value)
        writes.append(
            StoredWrite(
                task_id=task_id,
                task_path=task_path,
                idx=e[0],
                channel=e[1],
                type_=type_,
                data=value,
                s3_key=e[4] if len(e) > 4 else None,
                sort_key=sort_key,
            )
        )
    return writes
