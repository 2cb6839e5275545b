"""The step worker's side of streams: a publisher for a run that asked for a stream."""

from __future__ import annotations

from functools import cache
from typing import Any

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
    return StepPublisher(
        _log(settings.runtime_table),
        run_id=run.run_id,
        step=step,
        attempt=attempt,
        modes=list(options["modes"]),
        subgraphs=bool(options.get("subgraphs")),
        resumed=resumed,
    )
