"""Completion webhooks: what a run ending costs in AWS requests, and delivery on the local stack.

(a) AWS requests made by the step message that ends a ``support`` run, with run-ended events
    off (no bus configured), on for a run without a webhook, and on for a run with one; plus
    the sender's requests for one delivery answered 2xx at once (the receiver's HTTP request
    not counted). Counted with botocore ``before-call`` hooks, as ``bench.worker`` does.
(b) The local stack (``LocalStack``: moto EventBridge rule -> deliveries queue -> poller ->
    the real sender) with ``BENCH_WEBHOOK_RUNS`` runs (default 100; the issue's 500 takes
    minutes on a shared laptop) to a local receiver failing 30% of attempts at random, retry
    delays of 1 s: every run delivered exactly once in effect (unique ``webhook-id`` answered
    2xx = runs), none lost; latency from ``run_ended_at`` to the receiver's 2xx, p50/p95, for
    the deliveries that succeeded at their first attempt (the idle-stack figure; goal p95 <
    1 s) and for all.

Run with ``python -m bench webhooks``.
"""

from __future__ import annotations

import json
import os
import random
import socket
import statistics
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BILLING = {"messages": [{"role": "user", "content": "I was charged twice on my invoice"}]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Context:
    function_name = "bench"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"
    aws_request_id = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


class _Receiver:
    """Answers 500 to ``fail_rate`` of attempts at random, 200 otherwise; records 2xx times."""

    def __init__(self, fail_rate: float) -> None:
        self.fail_rate = fail_rate
        self.lock = threading.Lock()
        self.attempts = 0
        self.ok: dict[str, list[float]] = {}  # webhook-id -> [latency s of each 2xx]
        self.first_try: set[str] = set()
        self.seen: set[str] = set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                wid = self.headers["webhook-id"]
                with receiver.lock:
                    receiver.attempts += 1
                    first = wid not in receiver.seen
                    receiver.seen.add(wid)
                    fail = random.random() < receiver.fail_rate
                    if not fail:
                        ended = json.loads(body)["run_ended_at"]
                        latency = (
                            datetime.now(UTC) - datetime.fromisoformat(ended)
                        ).total_seconds()
                        receiver.ok.setdefault(wid, []).append(latency)
                        if first:
                            receiver.first_try.add(wid)
                self.send_response(500 if fail else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# --- (a) requests per run ending -----------------------------------------------------------


def requests_per_ending() -> None:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }.items():
        os.environ.setdefault(key, value)
    import boto3
    from moto.server import ThreadedMotoServer

    from functions.resources import WEBHOOK_QUEUE, local_name

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    try:
        from infra.local.resources import create_resources
        from infra.local.webhooks import create_webhook_routing

        created = create_resources(endpoint, "us-east-1")
        os.environ.update(created.env)
        deliveries = created.queues[local_name(WEBHOOK_QUEUE.logical_id)]
        bus_env = create_webhook_routing(endpoint, "us-east-1", deliveries.arn)
        _count_endings(boto3.client("sqs", endpoint_url=endpoint), bus_env, deliveries.url)
    finally:
        server.stop()


def _count_endings(sqs: Any, bus_env: dict[str, str], deliveries_url: str) -> None:
    from functions import aws
    from functions.api_models import RunCreate, ThreadCreate
    from functions.checkpointer import make_checkpointer
    from functions.handlers import step_worker, webhooks
    from functions.queues import StepQueues
    from functions.runs import RunService
    from functions.settings import Settings
    from functions.steps import StepWorker
    from functions.store import Store
    from functions.threads import ThreadService
    from functions.webhooks.sender import WebhookSender
    from functions.webhooks.signing import new_secret

    counting = [False]
    calls: Counter[str] = Counter()

    def count(**kwargs: Any) -> None:
        if counting[0]:
            model = kwargs["model"]
            calls[f"{model.service_model.service_name}:{model.name}"] += 1

    receiver = _Receiver(fail_rate=0.0)
    base = Settings(api_keys="")
    saver = make_checkpointer(base)
    clients = [aws.sqs_client(), aws.dynamodb_resource().meta.client, saver.client]
    clients.append(aws.events_client())
    for client in clients:
        client.meta.events.register("before-call", count)

    cases = [
        ("events off (no bus)", {}, False),
        ("events on, no webhook", {"event_bus_name": bus_env["LAMBDAGRAPH_EVENT_BUS_NAME"]}, False),
        ("events on, webhook", {"event_bus_name": bus_env["LAMBDAGRAPH_EVENT_BUS_NAME"]}, True),
    ]
    settings_extra = {
        "webhook_secret": new_secret(),
        "webhook_require_https": False,
        "webhook_allow_private": True,
    }
    print(f"{'case':<24} {'ending msg requests':>20}  by operation")
    baseline = 0.0
    sender_calls: Counter[str] = Counter()
    for label, extra, with_hook in cases:
        settings = base.model_copy(update={**extra, **settings_extra})
        store = Store(settings.runtime_table)
        runs = RunService(settings, store, StepQueues(settings))
        worker = StepWorker(runs)
        totals: list[int] = []
        last: Counter[str] = Counter()
        for _ in range(3):
            thread = ThreadService(settings, store).create("public", ThreadCreate())
            runs.create(
                "public",
                thread.thread_id,
                RunCreate(
                    assistant_id="support",
                    input=BILLING,
                    webhook=receiver.url if with_hook else None,
                ),
            )
            ending: Counter[str] = Counter()
            while True:
                got = sqs.receive_message(
                    QueueUrl=settings.queue_url_normal,
                    MaxNumberOfMessages=1,
                    AttributeNames=["All"],
                ).get("Messages", [])
                if not got:
                    break
                m = got[0]
                event = {"Records": [_record(m)]}
                calls.clear()
                counting[0] = True
                step_worker.handler(event, _Context(), worker=worker)
                counting[0] = False
                ending = Counter(calls)  # the last message is the one that ended the run
                sqs.delete_message(
                    QueueUrl=settings.queue_url_normal, ReceiptHandle=m["ReceiptHandle"]
                )
            totals.append(sum(ending.values()))
            last = ending
            if with_hook:
                sender = WebhookSender(settings)
                got = sqs.receive_message(QueueUrl=deliveries_url, WaitTimeSeconds=1).get(
                    "Messages", []
                )
                for m in got:
                    calls.clear()
                    counting[0] = True
                    webhooks.handler({"Records": [_record(m)]}, _Context(), sender=sender)
                    counting[0] = False
                    sender_calls = Counter(calls)
                    sqs.delete_message(QueueUrl=deliveries_url, ReceiptHandle=m["ReceiptHandle"])
        mean = statistics.mean(totals)
        if not extra:
            baseline = mean
        detail = ", ".join(f"{k} x{v}" for k, v in sorted(last.items()))
        print(f"{label:<24} {mean:>12.1f} ({mean - baseline:+.1f})  {detail}")
    detail = ", ".join(f"{k} x{v}" for k, v in sorted(sender_calls.items()))
    print(f"{'sender, one delivery':<24} {sum(sender_calls.values()):>12}        {detail}")
    receiver.stop()


def _record(m: dict[str, Any]) -> dict[str, Any]:
    return {
        "messageId": m["MessageId"],
        "receiptHandle": m["ReceiptHandle"],
        "body": m["Body"],
        "attributes": m.get("Attributes", {}),
        "messageAttributes": {},
        "md5OfBody": m["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:bench",
        "awsRegion": "us-east-1",
    }


# --- (b) the local stack ---------------------------------------------------------------------


def local_delivery() -> None:
    import httpx

    from functions.webhooks.signing import new_secret
    from infra.local.stack import LocalStack

    runs_wanted = int(os.environ.get("BENCH_WEBHOOK_RUNS", "100"))
    os.environ["LAMBDAGRAPH_WEBHOOK_SECRET"] = new_secret()
    os.environ["LAMBDAGRAPH_WEBHOOK_RETRY_DELAYS"] = "1,1,1,1,1,1,1,1"
    os.environ.pop("LAMBDAGRAPH_API_KEYS", None)
    receiver = _Receiver(fail_rate=0.3)
    started = time.monotonic()
    with LocalStack(port=0, moto_port=0, housekeeping_interval_s=0) as stack:
        http = httpx.Client(base_url=stack.url, timeout=30)
        run_ids = []
        for _ in range(runs_wanted):
            reply = http.post("/threads", json={})
            reply.raise_for_status()
            thread = reply.json()
            run = http.post(
                f"/threads/{thread['thread_id']}/runs",
                json={"assistant_id": "support", "input": BILLING, "webhook": receiver.url},
            ).json()
            run_ids.append(run["run_id"])
        deadline = time.monotonic() + 120 + runs_wanted
        while len(receiver.ok) < runs_wanted and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # any duplicate would arrive now
    receiver.stop()
    delivered = {wid for wid in receiver.ok}
    expected = {f"run_{r}" for r in run_ids}
    duplicates = sum(len(v) - 1 for v in receiver.ok.values())
    first = [receiver.ok[w][0] for w in receiver.first_try]
    every = [v[0] for v in receiver.ok.values()]
    print(
        f"runs {runs_wanted}, attempts {receiver.attempts}, delivered {len(delivered & expected)}, "
        f"lost {len(expected - delivered)}, 2xx answered twice {duplicates} "
        f"({time.monotonic() - started:.0f} s in all)"
    )
    print(
        f"latency run end -> 2xx, first-attempt deliveries ({len(first)}): "
        f"p50 {_pct(first, 0.5) * 1000:.0f} ms, p95 {_pct(first, 0.95) * 1000:.0f} ms "
        f"(goal p95 < 1 s: {'met' if _pct(first, 0.95) < 1 else 'NOT met'})"
    )
    print(
        f"latency run end -> 2xx, all deliveries ({len(every)}, retries 1 s apart): "
        f"p50 {_pct(every, 0.5) * 1000:.0f} ms, p95 {_pct(every, 0.95) * 1000:.0f} ms"
    )


def main() -> None:
    import subprocess
    import sys

    # Each part in its own interpreter: the engine caches its boto3 clients per process,
    # and each part starts its own moto server.
    for title, part in (
        ("(a) AWS requests per run ending", "requests_per_ending"),
        ("\n(b) local stack deliveries", "local_delivery"),
    ):
        print(title, flush=True)
        code = f"import logging; logging.disable(logging.WARNING); import bench.webhooks as b; b.{part}()"
        subprocess.run([sys.executable, "-c", code], check=True)


if __name__ == "__main__":
    main()
