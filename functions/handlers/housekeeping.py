"""Housekeeping Lambda (scheduled): re-queue runs whose lease expired."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer

from functions.housekeeping import requeue_expired
from functions.runs import RunService
from functions.settings import get_settings

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: Any, runs: RunService | None = None) -> dict[str, Any]:
    if runs is None:
        runs = RunService.from_settings(get_settings())
    return {"requeued": requeue_expired(runs)}
