"""LangGraph's own checkpointer conformance suite, one pytest test per capability."""

from __future__ import annotations

import importlib
from collections.abc import AsyncGenerator

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import Capability

from tests.checkpoint.conftest import SaverFactory

pytestmark = [pytest.mark.conformance, pytest.mark.integration]


def expected_tests(capability: str) -> int:
    """How many tests the installed suite has for a capability (its ``ALL_<CAP>_TESTS``).

    Read from the suite itself, not pinned to one release: pyproject allows newer versions,
    whose added tests must run (and pass) here too.
    """
    spec = importlib.import_module(f"langgraph.checkpoint.conformance.spec.test_{capability}")
    tests = getattr(spec, f"ALL_{capability.upper()}_TESTS")
    assert tests, f"the installed suite has no {capability} tests"
    return len(tests)


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
    assert result.tests_passed == expected_tests(capability)
    assert result.passed is True
