"""Readable one-line logs for the local stack.

The functions log Powertools JSON, which CloudWatch wants and a terminal does not. Locally
each Powertools formatter keeps building its structured record (so appended keys such as
``run_id`` still arrive) but renders it as one line: time, level, message, then the keys
worth reading.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Mapping
from typing import Any

# Keys every Powertools record carries that add nothing on a terminal.
_NOISE = frozenset(
    {
        "timestamp",
        "level",
        "message",
        "location",
        "service",
        "sampling_rate",
        "xray_trace_id",
        "cold_start",
        "function_arn",
        "function_memory_size",
        "function_request_id",
        "function_name",
        "logger",
    }
)
_FIRST = ("run_id", "thread_id", "step", "priority")


def readable_line(record: Mapping[str, Any]) -> str:
    """``12:00:01.234 INFO  step done  run_id=... thread_id=... step=2`` from a Powertools record."""
    timestamp = str(record.get("timestamp", ""))
    clock = timestamp[11:23].replace(",", ".") if len(timestamp) >= 23 else timestamp
    level = str(record.get("level", "INFO"))
    extras = {k: v for k, v in record.items() if k not in _NOISE and v not in (None, "")}
    exception = extras.pop("exception", None)
    extras.pop("exception_name", None)
    extras.pop("stack_trace", None)
    ordered = [k for k in _FIRST if k in extras] + sorted(k for k in extras if k not in _FIRST)
    fields = " ".join(f"{key}={_short(extras[key])}" for key in ordered)
    line = f"{clock} {level:<5} {record.get('message', '')}"
    if fields:
        line += f"  {fields}"
    if exception:
        line += f"\n{exception}"
    return line


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 120 else text[:117] + "..."


def use_readable_powertools_logs() -> int:
    """Render every Powertools logger's records as one line; returns how many were switched."""
    from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

    # Metrics are off locally, so every invocation would warn that it published none.
    warnings.filterwarnings("ignore", message="No application metrics to publish")

    switched = 0
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        if not isinstance(logger, logging.Logger):
            continue
        for handler in logger.handlers:
            formatter = handler.formatter
            if isinstance(formatter, LambdaPowertoolsFormatter):
                # json_serializer is the formatter's documented rendering hook.
                formatter.json_serializer = readable_line
                switched += 1
    return switched


def configure_stack_logging(level: int = logging.INFO) -> None:
    """One-line logs for the stack's own loggers (``infra.local``); quiet the chatty libraries."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)-5s %(message)s", "%H:%M:%S")
    )
    stack_logger = logging.getLogger("infra.local")
    stack_logger.handlers = [handler]
    stack_logger.setLevel(level)
    stack_logger.propagate = False
    for noisy in ("werkzeug", "botocore", "boto3", "urllib3", "moto"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
