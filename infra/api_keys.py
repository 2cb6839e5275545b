"""Create API keys for a deployed stack: ``python -m infra.api_keys create``.

A key is shown once and stored only as its SHA-256 hash in the runtime table (the item the API
function's key check reads, ``functions.store.Store.put_api_key``). Each key is a tenant: it sees
only its own threads and runs. ``--tenant`` gives a new key the tenant of an existing one.
"""

from __future__ import annotations

import argparse
import secrets
import sys

import boto3

from functions.auth import key_hash, tenant_of
from functions.store import Store

DEFAULT_STACK = "LambdaGraph"
RUNTIME_TABLE_OUTPUT = "RuntimeTableName"


def runtime_table_of(stack_name: str) -> str:
    """The runtime table's name from the stack's outputs."""
    stacks = boto3.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"]
    for output in stacks[0].get("Outputs", []):
        if output["OutputKey"] == RUNTIME_TABLE_OUTPUT:
            return str(output["OutputValue"])
    raise SystemExit(f"stack {stack_name} has no {RUNTIME_TABLE_OUTPUT} output: is it deployed?")


def create_key(table_name: str, tenant: str | None = None) -> tuple[str, str]:
    """Store a new key's hash; returns (key, tenant). The key itself is never stored."""
    key = "lg_" + secrets.token_urlsafe(32)
    digest = key_hash(key)
    owner = tenant or tenant_of(digest)
    Store(table_name).put_api_key(digest, owner)
    return key, owner


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.api_keys", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a key and print it once")
    where = create.add_mutually_exclusive_group()
    where.add_argument("--stack", default=DEFAULT_STACK, help="stack to read the table from")
    where.add_argument("--table", help="runtime table name (skips the stack lookup)")
    create.add_argument("--tenant", help="tenant id (default: derived from the new key)")
    args = parser.parse_args(argv)

    table = args.table or runtime_table_of(args.stack)
    key, tenant = create_key(table, args.tenant)
    print(f"tenant: {tenant}", file=sys.stderr)
    print(key)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
