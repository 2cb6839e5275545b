"""Fixtures for the node cache tests: a fresh cache table on the moto server per test."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from functions.cache import DynamoDBCache
from tests.clocks import FakeClock

CacheFactory = Callable[..., DynamoDBCache[Any]]


@pytest.fixture
def dynamodb(moto_endpoint: str) -> Any:
    return boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def make_cache(dynamodb: Any) -> CacheFactory:
    """Build a cache on its own new table so tests never see each other's entries."""

    def make(*, setup: bool = True, client: Any = None, **options: Any) -> DynamoDBCache[Any]:
        cache: DynamoDBCache[Any] = DynamoDBCache(
            f"cache-{uuid.uuid4().hex[:12]}", client=client or dynamodb, **options
        )
        if setup:
            cache.setup()
        return cache

    return make


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# moto's HTTP server logs every request; failures are easier to read without them.
logging.getLogger("werkzeug").setLevel(logging.WARNING)
