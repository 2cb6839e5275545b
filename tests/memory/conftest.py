"""Fixtures for the memory store tests: a fresh memory table on the moto server per test."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from functions.memory import DynamoDBStore
from tests.clocks import FakeClock

StoreFactory = Callable[..., DynamoDBStore]


@pytest.fixture
def dynamodb(moto_endpoint: str) -> Any:
    return boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def make_store(dynamodb: Any) -> StoreFactory:
    """Build a store on its own new table so tests never see each other's memories."""

    def make(*, setup: bool = True, client: Any = None, **options: Any) -> DynamoDBStore:
        store = DynamoDBStore(
            f"memory-{uuid.uuid4().hex[:12]}", client=client or dynamodb, **options
        )
        if setup:
            store.setup()
        return store

    return make


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# moto's HTTP server logs every request; failures are easier to read without them.
logging.getLogger("werkzeug").setLevel(logging.WARNING)
