"""Errors a user of the node cache can hit, each saying what happened and what to do.

Only misconfiguration raises (a missing table, a denied call): a cache that would silently
never hit is worse than a run that fails and names its cause. Throttling and networking after
botocore's own retries degrade to a miss or an unwritten entry (``DynamoDBCache``), since the
node's result is computed either way.
"""

from __future__ import annotations

CACHE_SETTING = "LAMBDAGRAPH_CACHE_TABLE"


class CacheError(Exception):
    """Base class of the node cache's own errors."""


class CacheTableMissingError(CacheError):
    def __init__(self, table_name: str) -> None:
        super().__init__(
            f"DynamoDB table {table_name!r} (the node cache, {CACHE_SETTING}) does not exist: "
            "run DynamoDBCache.setup() (local / tests) or deploy the stack that creates it "
            "(AWS); unset the setting to run without a node cache."
        )
        self.table_name = table_name
