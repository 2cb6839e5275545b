"""AWS requests per superstep in the step worker, every service counted (goal: at most 6).

Starts a moto server, creates the resources as the local stack does, drives ``support`` runs
by handing each step message to ``functions.handlers.step_worker.handler`` (as the SQS event
source would) and counts, with botocore ``before-send`` hooks on every client the worker
uses (runtime table, checkpointer's DynamoDB and S3, SQS), the requests made inside each
invocation. Deleting the message afterwards is the event source mapping's job, not the
worker's, so it is not counted.
"""

from __future__ import annotations

import json
import os
import socket
from collections import Counter
from typing import Any

RUNS = 5
INPUTS = [
    "I was charged twice on my invoice",
    "the app crashes with an error",
    "hello there",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Context:
    function_name = "bench-step-worker"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"
    aws_request_id = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def main() -> None:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_METRICS_NAMESPACE": "lambdagraph",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }.items():
        os.environ.setdefault(key, value)
    import boto3
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    try:
        _measure(endpoint, boto3.client("sqs", endpoint_url=endpoint))
    finally:
        server.stop()


def _measure(endpoint: str, sqs: Any) -> None:
    from infra.local.resources import create_resources

    created = create_resources(endpoint, "us-east-1")
    os.environ.update(created.env)

    from functions import aws
    from functions.api_models import RunCreate, ThreadCreate
    from functions.checkpointer import make_checkpointer
    from functions.handlers import step_worker
    from functions.queues import StepQueues
    from functions.runs import RunService
    from functions.settings import Settings
    from functions.steps import StepWorker
    from functions.store import Store
    from functions.threads import ThreadService

    settings = Settings(api_keys="")
    store = Store(settings.runtime_table)
    runs = RunService(settings, store, StepQueues(settings))
    threads = ThreadService(settings, store)
    worker = StepWorker(runs)
    saver = make_checkpointer(settings)

    counting = False
    calls: Counter[str] = Counter()

    def count(**kwargs: Any) -> None:
        if counting:
            model = kwargs["model"]
            calls[f"{model.service_model.service_name}:{model.name}"] += 1

    clients = [aws.sqs_client(), aws.dynamodb_resource().meta.client, saver.client]
    if getattr(saver, "s3", None) is not None:
        clients.append(saver.s3)
    for client in clients:
        client.meta.events.register("before-call", count)

    from functions.executor import thread_config

    def checkpoints(thread_id: str) -> int:
        return len(list(saver.list(thread_config(thread_id))))

    # (run, step message number, supersteps it executed, requests by operation)
    per_step: list[tuple[int, int, int, Counter[str]]] = []
    url = settings.queue_url_normal
    for i in range(RUNS):
        thread = threads.create("public", ThreadCreate())
        text = INPUTS[i % len(INPUTS)]
        runs.create(
            "public",
            thread.thread_id,
            RunCreate(
                assistant_id="support", input={"messages": [{"role": "user", "content": text}]}
            ),
        )
        while True:
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, AttributeNames=["All"])
            messages = got.get("Messages", [])
            if not messages:
                break
            m = messages[0]
            step = json.loads(m["Body"])["step"]
            event = {
                "Records": [
                    {
                        "messageId": m["MessageId"],
                        "receiptHandle": m["ReceiptHandle"],
                        "body": m["Body"],
                        "attributes": m["Attributes"],
                        "messageAttributes": {},
                        "md5OfBody": m["MD5OfBody"],
                        "eventSource": "aws:sqs",
                        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:lambdagraph-stepqueuenormal",
                        "awsRegion": "us-east-1",
                    }
                ]
            }
            before = checkpoints(thread.thread_id)
            calls.clear()
            counting = True
            result = step_worker.handler(event, _Context(), worker=worker)
            counting = False
            assert not result["batchItemFailures"], result
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            supersteps = checkpoints(thread.thread_id) - before
            per_step.append((i, step, supersteps, Counter(calls)))

    print(f"support runs: {RUNS}, step messages: {len(per_step)}")
    print(f"{'msg':>4}  {'supersteps':>10}  {'requests':>8}  by operation (first run)")
    for _, step, supersteps, counter in per_step[: len(per_step) // RUNS]:
        detail = ", ".join(f"{k} x{v}" for k, v in sorted(counter.items()))
        print(f"{step:>4}  {supersteps:>10}  {sum(counter.values()):>8}  {detail}")
    requests = sum(sum(c.values()) for *_, c in per_step)
    supersteps_total = sum(s for _, _, s, _ in per_step)
    per_superstep = [sum(c.values()) / max(s, 1) for _, _, s, c in per_step]
    print(
        f"requests per superstep: mean {requests / supersteps_total:.2f}, "
        f"worst message {max(per_superstep):.2f}; requests per step message: "
        f"mean {requests / len(per_step):.2f}, max {max(sum(c.values()) for *_, c in per_step)}"
    )
    print(f"goal <= 6 per superstep: {'met' if max(per_superstep) <= 6 else 'NOT met'}")


if __name__ == "__main__":
    main()
