"""Where things are in the checkpoint table: attribute names, sort key shapes, item sizes.

One table, ``pk`` = thread id, ``sk`` = namespace + separator + ...:

* checkpoint item ``{ns}\\x1f{checkpoint_id}``;
* writes item ``{ns}\\x1f{checkpoint_id}\\x1f{task}\\x1f{idx}`` (one ``put_writes`` call);
* side item ``{ns}\\x1e{checkpoint_id}\\x1f{channel}`` (a graph input, beside the read window).

Also the budgets that decide what goes to S3, and the tuning constants of the read and write
paths (each says which path reads it).
"""

from __future__ import annotations

from functions.resources import CHECKPOINT_TABLE

SEP = "\x1f"  # separates namespace, checkpoint id and task id inside a sort key
# Side items sort just below a namespace's range, so the window Query never reads them:
# ``{ns}\x1e{checkpoint_id}\x1f{channel}`` holds a graph input (see SIDE_CHANNELS).
SIDE_SEP = "\x1e"
# A graph's input lands in __start__ at the input checkpoint and is consumed at once (the next
# checkpoint rebuilds from the input task's writes): storing it beside the namespace keeps
# every later read from carrying it.
SIDE_CHANNELS = frozenset({"__start__"})
SIDE_MIN_BYTES = 512
AFTER_SEP = "\x20"
TOP = "\U0010ffff"
PK = CHECKPOINT_TABLE.partition_key
SK = CHECKPOINT_TABLE.sort_key or "sk"
TTL = CHECKPOINT_TABLE.ttl_attribute or "ttl"
DATA = "d"
# DynamoDB's item limit is 400 KB; values move to S3 once an item's values pass this budget,
# which leaves room for keys, names, versions and metadata.
ITEM_BUDGET = 350_000
# What an encoded item may take at most (names and values; the TTL attribute's room kept).
ITEM_LIMIT = 400 * 1024 - 64
BATCH = 25
TASK_REF = 8  # characters of a task id that name it among one checkpoint's tasks
# Compact when the read window holds this much more than twice the live values.
COMPACT_SLACK = 64 * 1024
# Store a checkpoint's record in full rather than as a diff that would stretch the read
# window back over more than this many bytes.
DIFF_CHAIN_BYTES = 2048
# A record whose base equals its parent's stores none, except every this many records.
BASE_EVERY = 8
# (thread, namespace) pairs whose latest state a saver keeps in memory.
CACHED_THREADS = 256
# Items a known window may have gained since this saver last saw it (other writers' writes).
WINDOW_SLACK = 2
# With a TTL, items are written to expire ttl_seconds + a margin after they were written,
# and put() compacts rather than rebuild from items written more than the margin ago: what
# a head is rebuilt from then lives at least ttl_seconds past the head (see _ttl_margin).
TTL_MARGIN_MAX_S = 86400.0
# How long put() waits for a concurrent put_writes() to register (see _await_writes).
AWAIT_WRITES_S = 0.025

CHECKPOINT_KEYS = frozenset(
    {"v", "id", "ts", "channel_values", "channel_versions", "versions_seen", "updated_channels"}
)


def ns_prefix(ns: str) -> str:
    return f"{ns}{SEP}"


def read_floor(sort_key_suffix: str) -> str:
    """The read floor for an item: a writes item ``cid\x1ftask\x1fidx`` becomes
    ``cid\x1f`` (every write of that checkpoint, not its checkpoint item), which is half
    as long to store and still sorts at or below the item."""
    checkpoint_id, sep, _ = sort_key_suffix.partition(SEP)
    return checkpoint_id + sep


def item_size(thread_id: str, sort_key: str, data: bytes) -> int:
    """DynamoDB's size of one of our items (names + values), without the TTL attribute."""
    return len(PK) + len(thread_id.encode()) + len(SK) + len(sort_key.encode()) + 1 + len(data)


def check_key_part(name: str, value: str) -> None:
    if SEP in value or SIDE_SEP in value:
        raise ValueError(f"{name} must not contain the characters U+001E/U+001F: {value!r}")


def namespace_of(sort_key: str) -> str:
    return sort_key.split(SEP, 1)[0].split(SIDE_SEP, 1)[0]


def is_side(sort_key: str) -> bool:
    return SIDE_SEP in sort_key.split(SEP, 1)[0]
