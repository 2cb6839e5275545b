"""Every crash point, systematically; and throttling with duplicate deliveries.

Each scenario (``tests/crashpoints/scenarios.py``) is played fault-free, recording every AWS
call the engine makes; then replayed dying just before, and just after, each of those calls,
and left to recover (SQS redelivery after the visibility timeout, the DLQ after
``maxReceiveCount``, housekeeping every 5 minutes) on a simulated clock with the deployed
timings. Every replay must end as the fault-free run did.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from tests.crashpoints.harness import (
    CrashPointsExplored,
    Environment,
    Exploration,
    explore_crashes,
    explore_noise,
)
from tests.crashpoints.scenarios import SCENARIOS, Scenario

pytestmark = pytest.mark.integration

NOISE_SEEDS = (1, 2)


def _report(request: pytest.FixtureRequest, exploration: Exploration) -> None:
    request.node.user_properties.append(("crash_points", exploration.points))
    request.node.user_properties.append(("crash_replays", exploration.replays))
    request.node.add_report_section("call", "crash points", exploration.summary())
    here = Path(__file__).resolve().parent
    args = [Path(a.split("::")[0]).resolve() for a in request.config.invocation_params.args]
    controller_has_summary = any(a == here or here in a.parents for a in args)
    if hasattr(request.config, "workerinput") and not controller_has_summary:
        warnings.warn(
            CrashPointsExplored(f"crash points explored: {exploration.summary()}"), stacklevel=1
        )


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_every_crash_point_recovers_to_the_fault_free_outcome(
    crash_env: Environment, scenario: Scenario, request: pytest.FixtureRequest
) -> None:
    # GIVEN the scenario's fault-free run: the AWS calls it makes and how it ends
    # WHEN it is replayed with the process dying just before each call and, separately, just
    #      after each call was answered, then left to redelivery and housekeeping
    exploration = explore_crashes(crash_env, scenario)
    _report(request, exploration)

    # THEN every replay ends as the fault-free run: statuses, values, interrupts and checkpoints
    #      equal, no thread held, no run pending or running, nothing in a DLQ
    assert exploration.points >= 2 * len(exploration.calls)
    if exploration.failures:
        pytest.fail(exploration.report(), pytrace=False)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_throttling_and_duplicate_deliveries_end_as_the_fault_free_run(
    crash_env: Environment, scenario: Scenario, request: pytest.FixtureRequest
) -> None:
    # GIVEN the scenario's fault-free run
    # WHEN it is replayed with DynamoDB/SQS throttling at random calls (seeded) and every step
    #      message delivered twice, sometimes by two concurrent invocations
    exploration = explore_noise(crash_env, scenario, seeds=NOISE_SEEDS)
    request.node.add_report_section("call", "throttling and duplicates", exploration.summary())

    # THEN each ends as the fault-free run did
    assert exploration.points == len(NOISE_SEEDS)
    if exploration.failures:
        pytest.fail(exploration.report(), pytrace=False)
