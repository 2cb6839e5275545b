"""Errors a user of the long-term memory store can hit, each saying what was wrong and what
to do.

Unlike the node cache (where a failure degrades to recomputing), a memory that was not
written or not read changes what the graph does, so every failure raises.
"""

from __future__ import annotations

MEMORY_SETTING = "LAMBDAGRAPH_MEMORY_TABLE"


class MemoryStoreError(Exception):
    """Base class of the memory store's own errors."""


class MemoryTableMissingError(MemoryStoreError):
    def __init__(self, table_name: str) -> None:
        super().__init__(
            f"DynamoDB table {table_name!r} (the long-term memory store, {MEMORY_SETTING}) "
            "does not exist: run DynamoDBStore.setup() (local / tests) or deploy the stack "
            "that creates it (AWS); unset the setting to run graphs without a store."
        )
        self.table_name = table_name


class MemoryItemTooLargeError(MemoryStoreError, ValueError):
    def __init__(self, namespace: tuple[str, ...], key: str, size: int, limit: int) -> None:
        super().__init__(
            f"memory {key!r} in namespace {namespace!r} is {size} bytes as stored, over "
            f"DynamoDB's item limit ({limit // 1000} KB): keep large documents elsewhere (S3, "
            "a database) and store a reference, or split the value over several keys."
        )
        self.namespace = namespace
        self.key = key
        self.size = size


class MemoryKeyTooLongError(MemoryStoreError, ValueError):
    def __init__(
        self, namespace: tuple[str, ...], key: str, part: str, size: int, limit: int
    ) -> None:
        super().__init__(
            f"namespace {repr(namespace)[:200]} with key {key[:80]!r}: {part} take {size} bytes, over "
            f"DynamoDB's key limit of {limit} bytes for it (the first label goes in the "
            "2 KB partition key, the further labels and the key in the 1 KB sort key): use "
            "shorter labels or keys."
        )


class MemoryLabelError(MemoryStoreError, ValueError):
    def __init__(self, namespace: tuple[str, ...]) -> None:
        super().__init__(
            f"namespace {namespace!r}: labels cannot contain the control characters "
            "'\\x1e' or '\\x1f' (the store separates labels with them)."
        )


class VectorSearchUnsupportedError(MemoryStoreError, NotImplementedError):
    def __init__(self) -> None:
        super().__init__(
            "DynamoDBStore has no vector (semantic) search: an `index` configuration "
            "cannot be used. Without one, `search(query=...)` ignores the query (as "
            "LangGraph's InMemoryStore does); filter on fields of the value instead, or use "
            "a store with vector search (e.g. PostgresStore with pgvector)."
        )


class MemoryThrottledError(MemoryStoreError):
    def __init__(self, keys: int, attempts: int) -> None:
        super().__init__(
            f"DynamoDB left {keys} memory reads unprocessed after {attempts} retries (the "
            "memory table is throttled): a memory must not read as missing, so the step "
            "fails and is retried."
        )
