"""LangGraph's own checkpointer conformance suite, one pytest test per capability."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import Capability

from tests.checkpoint.conftest import SaverFactory

pytestmark = [pytest.mark.conformance, pytest.mark.integration]

# The suite's test counts per capability (langgraph-checkpoint-conformance 0.0.2): 81 in all.
EXPECTED_TESTS = {
    "put": 17,
    "put_writes": 10,
    "get_tuple": 10,
    "list": 16,
    "delete_thread": 5,
    "delete_for_runs": 7,
    "copy_thread": 8,
    "prune": 8,
}


@pytest.mark.parametrize("capability", [c.value for c in Capability])
async def test_capability_passes_every_conformance_test(
    make_saver: SaverFactory, capability: str
) -> None:
    # GIVEN a DynamoDBSaver on a fresh moto table, registered with the suite
    async def factory() -> AsyncGenerator[object, None]:
        yield make_saver()

    registered = checkpointer_test(name=f"DynamoDBSaver-{capability}")(factory)

    # WHEN the suite runs that capability's tests
    report = await validate(registered, capabilities={capability})

    # THEN the capability is detected and every one of its tests passes
    result = report.results[capability]
    print(
        f"{capability}: passed={result.tests_passed} failed={result.tests_failed} "
        f"failures={result.failures}"
    )
    assert result.detected, f"{capability} not detected (async method not overridden)"
    assert result.failures == []
    assert result.tests_passed == EXPECTED_TESTS[capability]
    assert result.passed is True
