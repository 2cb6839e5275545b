"""GIVEN a runtime table on moto WHEN an operator creates an API key with infra.api_keys
THEN the API's own key check accepts that key as its tenant, and only the hash is stored."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import boto3
import pytest

from functions.auth import authenticate, key_hash
from functions.errors import UnauthorizedError
from functions.resources import RUNTIME_TABLE
from functions.settings import Settings
from functions.store import Store
from infra.api_keys import main

pytestmark = [pytest.mark.infra, pytest.mark.integration]


@pytest.fixture
def runtime_table(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    name = f"runtime-{uuid4().hex[:8]}"
    dynamodb: Any = boto3.client("dynamodb")  # plain dicts below, not the stubs' TypedDicts
    dynamodb.create_table(**RUNTIME_TABLE.create_table_request(name))
    return name


def test_created_key_authenticates_as_its_tenant(
    runtime_table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # WHEN a key is created for the table
    assert main(["create", "--table", runtime_table, "--tenant", "acme"]) == 0
    key = capsys.readouterr().out.strip()
    # THEN the API's key check (table mode, as deployed) maps it to the tenant
    settings = Settings(runtime_table=runtime_table, api_keys_in_table=True)
    assert authenticate(key, settings, Store(runtime_table)) == "acme"
    with pytest.raises(UnauthorizedError):
        authenticate(key + "x", settings, Store(runtime_table))
    # AND the table holds the hash, never the key
    items = boto3.resource("dynamodb").Table(runtime_table).scan()["Items"]
    assert [item["pk"] for item in items] == [f"APIKEY#{key_hash(key)}"]
    assert key not in str(items)
