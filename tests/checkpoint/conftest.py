"""Fixtures for the checkpointer tests: a fresh table and bucket on the moto server."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import pytest

from functions.checkpoint import DynamoDBSaver

SaverFactory = Callable[..., DynamoDBSaver]


@pytest.fixture
def make_saver(moto_endpoint: str) -> SaverFactory:
    """Build a saver on its own new table (and bucket) so tests never see each other's data."""

    def make(*, setup: bool = True, bucket: bool = True, **options: object) -> DynamoDBSaver:
        suffix = uuid.uuid4().hex[:12]
        saver = DynamoDBSaver(
            f"checkpoints-{suffix}",
            bucket_name=f"payloads-{suffix}" if bucket else None,
            endpoint_url=moto_endpoint,
            region_name="us-east-1",
            **options,  # type: ignore[arg-type]
        )
        if setup:
            saver.setup()
        return saver

    return make


@pytest.fixture
def saver(make_saver: SaverFactory) -> DynamoDBSaver:
    return make_saver()


# moto's HTTP server logs every request; failures are easier to read without them.
logging.getLogger("werkzeug").setLevel(logging.WARNING)
