"""The step a model call is made in, for accounting, budgets and rate limits.

The step worker sets it around the one superstep it runs; LangGraph runs nodes on threads
that copy the context, so a model call anywhere in the step sees it. Outside a step (tests,
the API) it is ``None``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class StepContext:
    run_id: str
    thread_id: str
    assistant_id: str
    # The run's step number (1 = the step that applies the run's input).
    step: int
    # The run's queue: ``high``, ``normal`` or ``low``.
    priority: str


_CURRENT: ContextVar[StepContext | None] = ContextVar("lambdagraph_step", default=None)


def current_step() -> StepContext | None:
    return _CURRENT.get()


@contextmanager
def step_context(ctx: StepContext) -> Iterator[StepContext]:
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)
