"""Issue API keys for a deployment that keeps them in the runtime table.

    python -m functions.apikeys create --tenant acme [--table <runtime table name>]

prints a new key once; only its SHA-256 is stored (``APIKEY#<sha256>``). The table defaults
to ``LAMBDAGRAPH_RUNTIME_TABLE``; AWS credentials and region come from the usual places.
"""

from __future__ import annotations

import argparse
import secrets
import sys

from functions.auth import key_hash
from functions.settings import Settings
from functions.store import Store


def create_key(store: Store, tenant: str) -> str:
    """Store a new key for ``tenant`` (hashed) and return the key itself."""
    key = "lg_" + secrets.token_urlsafe(32)
    store.put_api_key(key_hash(key), tenant)
    return key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m functions.apikeys")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="issue a key for a tenant")
    create.add_argument("--tenant", required=True)
    create.add_argument("--table", default=None, help="runtime table (default: from settings)")
    args = parser.parse_args(argv)
    table = args.table or Settings().runtime_table
    key = create_key(Store(table), args.tenant)
    print(key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
