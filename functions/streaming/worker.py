"""The step worker's side of streams: a publisher for a run that asked for a stream."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from functions.jsonable import to_jsonable
from functions.streaming.log import StreamLog
from functions.streaming.publisher import StepPublisher


@cache
def _log(table_name: str) -> StreamLog:
    return StreamLog(table_name)


def stream_options(kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """The run's ``stream`` request (``{"modes", "subgraphs"}``), None when it has none."""
    stream = kwargs.get("stream")
    return stream if isinstance(stream, dict) and stream.get("modes") else None


def step_publisher(
    settings: Any, run: Any, step: int, attempt: int, *, resumed: bool
) -> StepPublisher | None:
    """A publisher for this step of ``run``, or None: a run without a stream costs nothing."""
    options = stream_options(run.kwargs)
    if options is None:
        return None
    log = _log(settings.runtime_table)
    # A retry goes on from what the crashed attempt published of this step.
    published = [(e.name, e.data) for e in log.step_events(run.run_id, step)] if attempt > 1 else []
    return StepPublisher(
        log,
        run_id=run.run_id,
        step=step,
        attempt=attempt,
        modes=list(options["modes"]),
        subgraphs=bool(options.get("subgraphs")),
        resumed=resumed,
        published=published,
    )


def finish_done_step(settings: Any, run: Any, step: int, attempt: int, values: Any) -> None:
    """A retry found its step done by the crashed attempt, which may have died before it
    published the step's last event: the state after the step (``values``), published
    here unless it is there already. (Other modes' events after the checkpoint was written
    are not recovered: docs/streaming.md.)"""
    options = stream_options(run.kwargs)
    if options is None or "values" not in options["modes"]:
        return
    log = _log(settings.runtime_table)
    events = log.step_events(run.run_id, step)
    if any(e.name == "values" for e in events[-1:]):
        return
    data = json.dumps(to_jsonable(values), separators=(",", ":"))
    log.put(run.run_id, step, attempt, len(events), [("values", data)])
