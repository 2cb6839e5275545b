"""The local stack's step timings: the deployed ones (``functions.resources.STEP_TIMINGS``), scaled.

Recovery rests on three relations that AWS gives the deployed stack: a step message comes
back only after its visibility timeout, which outlives the claim's lease, which outlives the
invocation holding it (Lambda kills it at the function timeout). The local stack keeps the
same relations, so what works here works there; ``LAMBDAGRAPH_LOCAL_TIME_SCALE`` only makes
the clock run faster (60: the 30-minute visibility timeout becomes 30 s, the 300 s function
timeout 5 s, the 360 s lease 6 s, housekeeping every 5 s).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from functions.resources import STEP_TIMINGS, StepTimings

TIME_SCALE_ENV = "LAMBDAGRAPH_LOCAL_TIME_SCALE"
LEASE_ENV = "LAMBDAGRAPH_LEASE_S"
HOUSEKEEPING_ENV = "LAMBDAGRAPH_LOCAL_HOUSEKEEPING_S"


class LocalConfigError(ValueError):
    """A local stack setting is invalid; the message says which and what to set instead."""


@dataclass(frozen=True)
class LocalTimings:
    """The timings one local stack runs with, and where they came from (for the start-up line)."""

    scale: float
    steps: StepTimings
    # Housekeeping runs this often (0 = off); the scaled schedule unless overridden.
    housekeeping_every_s: float
    lease_from_env: bool = False

    @property
    def visibility_timeout_s(self) -> int:
        """What SQS accepts (whole seconds), rounded up so it can only grow past the lease."""
        return math.ceil(self.steps.visibility_timeout_s)

    def check(self) -> None:
        """LocalConfigError unless visibility > lease > function timeout (as SQS will see them)."""
        try:
            StepTimings(
                self.steps.function_timeout_s,
                self.steps.lease_s,
                self.visibility_timeout_s,
                self.steps.housekeeping_every_s,
            ).check()
        except ValueError as exc:
            hint = (
                f"unset {LEASE_ENV} (the stack derives it from {TIME_SCALE_ENV})"
                if self.lease_from_env
                else f"choose another {TIME_SCALE_ENV}"
            )
            raise LocalConfigError(
                f"the local step timings are inconsistent: {exc}; {hint}"
            ) from exc

    def describe(self) -> str:
        steps = self.steps
        housekeeping = (
            f"every {_seconds(self.housekeeping_every_s)}" if self.housekeeping_every_s else "off"
        )
        return (
            f"step timings (time scale {self.scale:g}): function timeout "
            f"{_seconds(steps.function_timeout_s)}, lease {_seconds(steps.lease_s)}"
            f"{' (' + LEASE_ENV + ')' if self.lease_from_env else ''}, visibility timeout "
            f"{self.visibility_timeout_s} s, housekeeping {housekeeping}"
        )


def _seconds(value: float) -> str:
    return f"{value:.3g} s"


def parse_time_scale(raw: str | None) -> float:
    """The factor from ``LAMBDAGRAPH_LOCAL_TIME_SCALE`` (unset or empty: 1, the deployed timings)."""
    if raw is None or not raw.strip():
        return 1.0
    try:
        scale = float(raw)
    except ValueError:
        scale = math.nan
    if not math.isfinite(scale) or scale <= 0:
        raise LocalConfigError(
            f"{TIME_SCALE_ENV} must be a positive number (1 = the deployed timings, "
            f"60 = a minute becomes a second), got {raw!r}"
        )
    return scale


def _positive_seconds(name: str, raw: str, *, allow_zero: bool) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        kind = "zero or more seconds (0 = off)" if allow_zero else "a positive number of seconds"
        raise LocalConfigError(f"{name} must be {kind}, got {raw!r}")
    return value


def local_timings(
    scale: float | None = None,
    *,
    housekeeping_every_s: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> LocalTimings:
    """``STEP_TIMINGS.scaled(scale)``, with the overrides a user may set in the environment.

    ``scale`` and ``housekeeping_every_s`` given here win over ``LAMBDAGRAPH_LOCAL_TIME_SCALE``
    and ``LAMBDAGRAPH_LOCAL_HOUSEKEEPING_S``; an explicit ``LAMBDAGRAPH_LEASE_S`` (seconds, not
    scaled) is honoured as on AWS, and ``check()`` refuses it if it breaks the relations.
    """
    env = os.environ if environ is None else environ
    if scale is None:
        scale = parse_time_scale(env.get(TIME_SCALE_ENV))
    elif not math.isfinite(scale) or scale <= 0:
        raise LocalConfigError(f"time scale must be a positive number, got {scale!r}")
    steps = STEP_TIMINGS.scaled(scale)
    lease_raw = env.get(LEASE_ENV, "").strip()
    if lease_raw:
        lease = _positive_seconds(LEASE_ENV, lease_raw, allow_zero=False)
        steps = StepTimings(
            steps.function_timeout_s, lease, steps.visibility_timeout_s, steps.housekeeping_every_s
        )
    if housekeeping_every_s is None:
        raw = env.get(HOUSEKEEPING_ENV, "").strip()
        housekeeping_every_s = (
            _positive_seconds(HOUSEKEEPING_ENV, raw, allow_zero=True)
            if raw
            else steps.housekeeping_every_s
        )
    return LocalTimings(scale, steps, housekeeping_every_s, lease_from_env=bool(lease_raw))
