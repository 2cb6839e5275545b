"""``python -m infra.local`` (``make run``): start the local stack until Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType

from infra.local.logs import configure_stack_logging
from infra.local.stack import LocalStack

log = logging.getLogger("infra.local")

FIRST_MESSAGE = "I was charged twice for my subscription"


def first_run_help(url: str, api_key: str | None) -> str:
    """How to start a first run, with curl and with langgraph-sdk."""
    key_header = f" -H 'x-api-key: {api_key}'" if api_key else ""
    key_arg = f'"{api_key}"' if api_key else "None"
    body = (
        '{"assistant_id": "support", "input": {"messages": '
        f'[{{"role": "user", "content": "{FIRST_MESSAGE}"}}]}}}}'
    )
    return f"""
lambdagraph local stack is up: {url}  (OpenAPI: {url}/openapi.json, Swagger UI: {url}/docs)

First run with curl:
  THREAD=$(curl -s -X POST {url}/threads{key_header} -H 'content-type: application/json' -d '{{}}' \\
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["thread_id"])')
  curl -s -X POST {url}/threads/$THREAD/runs/wait{key_header} -H 'content-type: application/json' \\
    -d '{body}'

First run with langgraph-sdk:
  from langgraph_sdk import get_sync_client
  client = get_sync_client(url="{url}", api_key={key_arg})
  thread = client.threads.create()
  print(client.runs.wait(thread["thread_id"], "support",
        input={{"messages": [{{"role": "user", "content": "{FIRST_MESSAGE}"}}]}}))

Ctrl-C stops the stack (all data lives in memory and goes with it).
"""


def main() -> int:
    configure_stack_logging()
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("%s received, stopping", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    # Timings (LAMBDAGRAPH_LOCAL_TIME_SCALE, ..._HOUSEKEEPING_S) and LAMBDAGRAPH_FAULTS are
    # read and checked by the stack as it starts.
    stack = LocalStack(readable_logs=True)
    try:
        stack.start()
    except ValueError as exc:
        # LocalConfigError / FaultConfigError / ProjectConfigError: the message names what to fix.
        log.error("could not start the local stack: %s", exc)
        return 1
    except OSError as exc:
        log.error("could not start the local stack: %s (is LAMBDAGRAPH_PORT in use?)", exc)
        return 1
    try:
        keys = [
            k.strip() for k in os.environ.get("LAMBDAGRAPH_API_KEYS", "").split(",") if k.strip()
        ]
        if not keys:
            log.warning(
                "LAMBDAGRAPH_API_KEYS is not set: authentication is OFF, any client may call the API"
            )
        print(first_run_help(stack.url, keys[0] if keys else None), flush=True)
        log.info("moto (AWS emulator) at %s", stack.moto_url)
        # Wake up now and then: a signal handler runs only between bytecodes of the main thread.
        while not stopping.wait(0.5):
            pass
    finally:
        stack.stop()
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
