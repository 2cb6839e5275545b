"""The timings a run's recovery relies on are checked together."""

from __future__ import annotations

import pytest

from functions.resources import STEP_TIMINGS, StepTimings


def test_deployed_timings_pass_the_check() -> None:
    # GIVEN / WHEN / THEN the deployed timings are consistent (visibility > lease > timeout)
    STEP_TIMINGS.check()
    STEP_TIMINGS.scaled(60).check()


@pytest.mark.parametrize(
    ("timings", "says"),
    [
        (StepTimings(300, 300, 1800, 300), "must exceed the step worker timeout"),
        (StepTimings(300, 360, 360, 300), "must exceed the step lease"),
    ],
)
def test_inconsistent_timings_are_refused(timings: StepTimings, says: str) -> None:
    # GIVEN a lease that does not outlive its invocation, or a message that comes back while
    # its claim lives WHEN checked THEN it is refused, saying why
    with pytest.raises(ValueError, match=says):
        timings.check()
