"""Checkpointer cost per superstep, seen from a step worker, against moto.

Scenario (issue 2): one superstep per invocation, each with a fresh saver and a freshly
compiled graph (``interrupt_after="*"`` on every ``stream`` call). The graph's one node
appends a ~1 KB message of random text (base64 of ``os.urandom``, so compression cannot
flatter anyone) to an ``operator.add`` list, beside a 10 KB channel that never changes.

Our saver runs twice, compression off (``compress_min_bytes=None``) and on (the default):
deflate still takes random base64 down to its 6-bit alphabet (~75%), so both are printed
beside the anchor, with which goal each meets. One more run uses English messages (the
standard library's module docs) to show what compression does on text.

Measured on the client through botocore event hooks: requests, item bytes written and read,
and estimated capacity units — WCU: 1 KB units per written item, on the larger of the old and
new item (a replaced item is billed whole); RCU: strongly consistent 4 KB units, a Query on
the sum of the items it returns, GetItem / BatchGetItem per item (1 RCU even when missing).
The anchor is ``langgraph-checkpoint-aws``'s ``DynamoDBSaver`` in the same run.

Run: ``.venv/bin/python -m bench checkpoint`` (or ``make bench``).
"""

from __future__ import annotations

import base64
import json
import math
import operator
import os
import socket
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

import boto3
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph

from functions.checkpoint import DynamoDBSaver

STEPS = 60
LONG_STEPS = 300
# One ~1 KB message per step (BENCH_MESSAGE_CHARS overrides, to see where item rounding bites).
MESSAGE_CHARS = int(os.environ.get("BENCH_MESSAGE_CHARS", "1024"))
CONSTANT_CHARS = 10 * 1024  # the channel that never changes
REGION = "us-east-1"

_WRITE_OPS = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}


def _random_text(chars: int) -> str:
    return base64.b64encode(os.urandom(chars)).decode()[:chars]


def _english_corpus() -> str:
    """Real English prose for the compressible variant: the standard library's own module
    documentation (no download, no generated word salad)."""
    import argparse
    import collections
    import email
    import http.client
    import json as json_module
    import logging
    import pathlib
    import subprocess
    import threading
    import unittest

    modules = [
        argparse,
        collections,
        email,
        http.client,
        json_module,
        logging,
        pathlib,
        subprocess,
        threading,
        unittest,
    ]
    docs = [doc for m in modules if (doc := (m.__doc__ or "").strip())]
    docs += [c.__doc__ or "" for c in (argparse.ArgumentParser, threading.Thread, pathlib.Path)]
    return " ".join(" ".join(d.split()) for d in docs)


_TEXT: Callable[[int], str] = _random_text


def _english_text(chars: int) -> str:
    corpus = _english_corpus()
    start = int.from_bytes(os.urandom(4), "big") % (len(corpus) - chars)
    return corpus[start : start + chars]


# ---------------------------------------------------------------- item sizes


def _value_size(value: dict[str, Any]) -> int:
    """DynamoDB's size of one attribute value (DynamoDB JSON with base64 binaries)."""
    ((kind, v),) = value.items()
    if kind == "S":
        return len(v.encode())
    if kind == "B":
        return len(base64.b64decode(v)) if isinstance(v, str) else len(v)
    if kind == "N":
        digits = len(str(v).lstrip("-").replace(".", "").lstrip("0")) or 1
        return math.ceil(digits / 2) + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + _value_size(x) for k, x in v.items())
    if kind == "L":
        return 3 + sum(1 + _value_size(x) for x in v)
    if kind in ("SS", "NS", "BS"):
        return sum(_value_size({kind[0]: x}) for x in v)
    raise ValueError(kind)


def item_size(item: dict[str, Any]) -> int:
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


# ------------------------------------------------------------------- metering


@dataclass
class StepCost:
    requests: int = 0
    bytes_written: int = 0
    bytes_read: int = 0
    wcu: int = 0
    rcu: int = 0
    ops: dict[str, int] = field(default_factory=dict)


class Meter:
    """Counts AWS calls made through a boto3 session (hooks registered before clients exist)."""

    def __init__(self, endpoint: str) -> None:
        self.session = boto3.Session(region_name=REGION)
        self.session.events.register("before-call.dynamodb.*", self._before_dynamodb)
        self.session.events.register("after-call.dynamodb.*", self._after_dynamodb)
        self.session.events.register("before-call.s3.*", self._before_s3)
        self.session.events.register("after-call.s3.*", self._after_s3)
        self.shadow: dict[str, int] = {}  # item key -> last written size (for replacements)
        self.steps: list[StepCost] = []
        self.current: StepCost | None = None
        self.endpoint = endpoint

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.endpoint, region_name=REGION)

    def start(self) -> None:
        self.current = StepCost()

    def stop(self) -> StepCost:
        assert self.current is not None
        cost, self.current = self.current, None
        self.steps.append(cost)
        return cost

    def _count(self, op: str) -> StepCost | None:
        if self.current is None:
            return None
        self.current.requests += 1
        self.current.ops[op] = self.current.ops.get(op, 0) + 1
        return self.current

    @staticmethod
    def _key(table: str, item: dict[str, Any], key_names: tuple[str, ...]) -> str:
        return table + json.dumps({k: item[k] for k in key_names if k in item}, sort_keys=True)

    def _written(self, cost: StepCost, table: str, item: dict[str, Any]) -> None:
        size = item_size(item)
        key = self._key(table, item, ("pk", "sk", "PK", "SK"))
        old = self.shadow.get(key, 0)
        self.shadow[key] = size
        cost.bytes_written += size
        cost.wcu += max(1, math.ceil(max(size, old) / 1024))

    def _before_dynamodb(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        cost = self._count(model.name)
        if cost is None or model.name not in _WRITE_OPS:
            return
        body = json.loads(params["body"] or b"{}")
        if model.name == "PutItem":
            self._written(cost, body["TableName"], body["Item"])
        elif model.name == "BatchWriteItem":
            for table, requests in body["RequestItems"].items():
                for request in requests:
                    if "PutRequest" in request:
                        self._written(cost, table, request["PutRequest"]["Item"])
                    else:
                        cost.wcu += 1
        elif model.name == "UpdateItem":
            # Billed on the whole item: size it after the call from the shadow (see after).
            cost.ops["_update_pending"] = 1
        elif model.name == "TransactWriteItems":
            for entry in body["TransactItems"]:
                if "Put" in entry:
                    self._written(cost, entry["Put"]["TableName"], entry["Put"]["Item"])
                    cost.wcu += max(1, math.ceil(item_size(entry["Put"]["Item"]) / 1024))
        elif model.name == "DeleteItem":
            cost.wcu += 1

    def _after_dynamodb(self, model: Any, parsed: dict[str, Any], **_: Any) -> None:
        cost = self.current
        if cost is None:
            return
        if model.name == "Query" or model.name == "Scan":
            size = sum(item_size(i) for i in parsed.get("Items", []))
            cost.bytes_read += size
            cost.rcu += max(1, math.ceil(size / 4096))
        elif model.name == "GetItem":
            size = item_size(parsed["Item"]) if "Item" in parsed else 0
            cost.bytes_read += size
            cost.rcu += max(1, math.ceil(size / 4096))
        elif model.name == "BatchGetItem":
            for items in parsed.get("Responses", {}).values():
                for item in items:
                    size = item_size(item)
                    cost.bytes_read += size
                    cost.rcu += max(1, math.ceil(size / 4096))
        elif model.name == "UpdateItem" and cost.ops.pop("_update_pending", None):
            attributes = parsed.get("Attributes")
            if attributes is None:
                raise RuntimeError("UpdateItem metering needs ReturnValues=ALL_NEW")
            self._written(cost, "?", attributes)

    def _before_s3(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        cost = self._count(f"s3:{model.name}")
        if cost is not None and model.name == "PutObject":
            body = params.get("body") or b""
            cost.bytes_written += len(body) if isinstance(body, bytes) else 0

    def _after_s3(self, model: Any, parsed: dict[str, Any], **_: Any) -> None:
        if self.current is not None and model.name == "GetObject":
            self.current.bytes_read += int(parsed.get("ContentLength", 0))


# ------------------------------------------------------------------- scenario


class State(TypedDict):
    messages: Annotated[list[str], operator.add]
    constant: str


def build_graph(checkpointer: BaseCheckpointSaver[Any], steps: int) -> Any:
    def append(state: State) -> dict[str, Any]:
        return {"messages": [_TEXT(MESSAGE_CHARS)]}

    def route(state: State) -> str:
        return END if len(state["messages"]) >= steps else "append"

    builder = StateGraph(State)
    builder.add_node("append", append)
    builder.add_edge(START, "append")
    builder.add_conditional_edges("append", route, ["append", END])
    return builder.compile(checkpointer=checkpointer)


def run_scenario(
    meter: Meter,
    make_saver: Callable[[], BaseCheckpointSaver[Any]],
    steps: int,
    between: Callable[[], None] = lambda: None,
) -> list[StepCost]:
    """One superstep per invocation (``between`` runs after each); returns their costs."""
    meter.steps = []
    config = {"configurable": {"thread_id": f"bench-{uuid.uuid4()}"}}
    inputs: dict[str, Any] | None = {"messages": [], "constant": _random_text(CONSTANT_CHARS)}
    for _ in range(steps):
        saver = make_saver()
        graph = build_graph(saver, steps)
        meter.start()
        for _chunk in graph.stream(
            inputs, config, interrupt_after="*", stream_mode=["checkpoints", "tasks"]
        ):
            pass
        meter.stop()
        between()
        inputs = None
    final = build_graph(make_saver(), steps).get_state(config)
    if len(final.values["messages"]) != steps:
        raise RuntimeError(f"expected {steps} messages, state has {len(final.values['messages'])}")
    return meter.steps


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ours(meter: Meter, **options: Any) -> Callable[[], BaseCheckpointSaver[Any]]:
    name = f"bench-ours-{uuid.uuid4().hex[:8]}"
    bucket = f"bench-ours-{uuid.uuid4().hex[:8]}"
    DynamoDBSaver(name, bucket_name=bucket, endpoint_url=meter.endpoint, region_name=REGION).setup()
    return lambda: DynamoDBSaver(
        name,
        bucket_name=bucket,
        dynamodb_client=meter.client("dynamodb"),
        s3_client=meter.client("s3"),
        **options,
    )


def _anchor(meter: Meter) -> Callable[[], BaseCheckpointSaver[Any]]:
    from langgraph_checkpoint_aws import DynamoDBSaver as AwsDynamoDBSaver

    name = f"bench-anchor-{uuid.uuid4().hex[:8]}"
    bucket = f"bench-anchor-{uuid.uuid4().hex[:8]}"
    admin = boto3.client("dynamodb", endpoint_url=meter.endpoint, region_name=REGION)
    admin.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "PK", "AttributeType": "S"},
            {"AttributeName": "SK", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "PK", "KeyType": "HASH"},
            {"AttributeName": "SK", "KeyType": "RANGE"},
        ],
    )
    boto3.client("s3", endpoint_url=meter.endpoint, region_name=REGION).create_bucket(Bucket=bucket)
    return lambda: AwsDynamoDBSaver(
        name,
        session=meter.session,
        endpoint_url=meter.endpoint,
        region_name=REGION,
        s3_offload_config={"bucket_name": bucket, "endpoint_url": meter.endpoint},
    )


def _totals(costs: list[StepCost]) -> dict[str, float]:
    return {
        "requests/step (max)": max(c.requests for c in costs),
        "requests/step (mean)": statistics.mean(c.requests for c in costs),
        f"KB written at step {len(costs)}": costs[-1].bytes_written / 1024,
        f"KB read at step {len(costs)}": costs[-1].bytes_read / 1024,
        "KB written (total)": sum(c.bytes_written for c in costs) / 1024,
        "KB read (total)": sum(c.bytes_read for c in costs) / 1024,
        "WCU (total)": sum(c.wcu for c in costs),
        "RCU (total, strong)": sum(c.rcu for c in costs),
    }


def main() -> None:
    global _TEXT
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        meter = Meter(f"http://127.0.0.1:{port}")
        off = run_scenario(meter, _ours(meter, compress_min_bytes=None), STEPS)
        on = run_scenario(meter, _ours(meter), STEPS)
        anchor = run_scenario(meter, _anchor(meter), STEPS)
        _print_comparison(off, on, anchor)
        if os.environ.get("BENCH_SKIP_ENGLISH") != "1":
            _TEXT = _english_text
            try:
                english = [
                    run_scenario(meter, _ours(meter, compress_min_bytes=None), STEPS),
                    run_scenario(meter, _ours(meter), STEPS),
                    run_scenario(meter, _anchor(meter), STEPS),
                ]
            finally:
                _TEXT = _random_text
            _print_english(*english)
        if os.environ.get("BENCH_SKIP_TTL") != "1":
            _print_ttl(meter, on)
        if os.environ.get("BENCH_SKIP_LONG") != "1":
            _print_long(run_scenario(meter, _ours(meter), LONG_STEPS))
    finally:
        server.stop()


_CONFIGS = ("ours, compression off", "ours, compression on (default)")


def _print_comparison(off: list[StepCost], on: list[StepCost], anchor: list[StepCost]) -> None:
    print(
        f"\nScenario: {STEPS} supersteps, one per invocation (fresh saver + graph), "
        f"{MESSAGE_CHARS}-char random message (base64 of os.urandom) appended per step, "
        f"{CONSTANT_CHARS // 1024} KB constant channel.\n"
        "ours off = DynamoDBSaver(compress_min_bytes=None); ours on = the default "
        "(values >= 512 B deflated when smaller).\n"
        "Random base64 only deflates to its 6-bit alphabet (~75%); real text shrinks "
        "more (see the English line below).\n"
    )
    head = f"{'req':>4} {'KB wr':>6} {'KB rd':>6} {'WCU':>4} {'RCU':>4}"
    print(f"{'step':>5} | {'ours off':^28} | {'ours on':^28} | {'anchor':^28}")
    print(f"{'':>5} | {head} | {head} | {head}")
    for i in [0, 1, 2, 9, 19, 29, 39, 49, STEPS - 1]:
        cells = [
            f"{c.requests:>4} {c.bytes_written / 1024:>6.2f} {c.bytes_read / 1024:>6.2f} "
            f"{c.wcu:>4} {c.rcu:>4}"
            for c in (off[i], on[i], anchor[i])
        ]
        print(f"{i + 1:>5} | " + " | ".join(cells))
    print(f"\nours (both), operations at step {STEPS}: {on[-1].ops}")
    print(f"anchor, operations at step {STEPS}: {anchor[-1].ops}\n")
    off_t, on_t, anchor_t = _totals(off), _totals(on), _totals(anchor)
    print(
        f"{'metric':<26} {'ours off':>10} {'ours on':>10} {'anchor':>10} "
        f"{'anchor/off':>11} {'anchor/on':>10}"
    )
    for key in off_t:
        o, n, a = off_t[key], on_t[key], anchor_t[key]
        print(f"{key:<26} {o:>10.1f} {n:>10.1f} {a:>10.1f} {_ratio(a, o):>11} {_ratio(a, n):>10}")
    print("\nGoals of issue 2 (same run, same anchor):")
    goals = [
        ("<= 3 requests per superstep (steady)", lambda c: max(x.requests for x in c[1:]) <= 3),
        ("<= 2 KB written at step 60", lambda c: c[-1].bytes_written <= 2048),
        (
            ">= 20x fewer WCU than the anchor",
            lambda c: sum(x.wcu for x in c) * 20 <= sum(x.wcu for x in anchor),
        ),
        (
            "<= the anchor's RCU",
            lambda c: sum(x.rcu for x in c) <= sum(x.rcu for x in anchor),
        ),
    ]
    for label, check in goals:
        verdicts = [
            f"{name}: {'met' if check(costs) else 'MISSED'}"
            for name, costs in zip(_CONFIGS, (off, on), strict=True)
        ]
        print(f"  {label:<40} " + "; ".join(verdicts))
    print(
        "  (compression helps the WCU and RCU lines: without it each 1,024-char message "
        "alone fills a 1 KB write unit)"
    )


def _ratio(anchor: float, ours: float) -> str:
    return f"{anchor / ours:.1f}x" if ours else "-"


def _print_english(off: list[StepCost], on: list[StepCost], anchor: list[StepCost]) -> None:
    print(
        f"\nSame scenario with {MESSAGE_CHARS}-char English messages (windows of the "
        "standard library's module docs; the 10 KB constant stays random), 60 steps:"
    )
    anchor_wcu = _totals(anchor)["WCU (total)"]
    for name, costs in (*zip(_CONFIGS, (off, on), strict=True), ("anchor", anchor)):
        t = _totals(costs)
        versus = "" if costs is anchor else f" ({_ratio(anchor_wcu, t['WCU (total)'])} fewer)"
        print(
            f"  {name:<32} WCU {t['WCU (total)']:>5.0f}{versus:<14} "
            f"RCU {t['RCU (total, strong)']:>4.0f}   "
            f"KB written at step {STEPS}: {t[f'KB written at step {STEPS}']:.2f}   "
            f"KB read at step {STEPS}: {t[f'KB read at step {STEPS}']:.1f}"
        )


class _Clock:
    """Simulated time for the savers' TTL: moves only when told."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


TTL_DAYS = 7  # the saver's margin for it: one day
TTL_GAP_HOURS = 2


def _print_ttl(meter: Meter, off: list[StepCost]) -> None:
    """What retention costs: the same 60 steps with ttl_seconds set, back to back and spread
    over five days (a step every 2 hours, on a simulated clock), against TTL off."""
    ttl = TTL_DAYS * 86400
    back_to_back = run_scenario(meter, _ours(meter, ttl_seconds=ttl), STEPS)
    clock = _Clock()

    def later() -> None:
        clock.now += TTL_GAP_HOURS * 3600

    spread = run_scenario(meter, _ours(meter, ttl_seconds=ttl, clock=clock), STEPS, later)
    print(
        f"\nRetention (compression on, {STEPS} steps): ttl_seconds = {TTL_DAYS} days "
        "(items carry a ttl; a step more than a day after what it would be rebuilt from "
        "stores its checkpoint in full)"
    )
    rows = (
        ("TTL off (default)", off),
        ("TTL on, steps back to back", back_to_back),
        (f"TTL on, a step every {TTL_GAP_HOURS} h", spread),
    )
    for name, costs in rows:
        t = _totals(costs)
        full = sum(1 for c in costs[1:] if c.bytes_written > 4 * 1024)
        print(
            f"  {name:<28} req/step max {t['requests/step (max)']:.0f} "
            f"mean {t['requests/step (mean)']:.2f}   WCU {t['WCU (total)']:>4.0f}   "
            f"RCU {t['RCU (total, strong)']:>4.0f}   KB written {t['KB written (total)']:>6.1f}   "
            f"checkpoints stored in full after step 1: {full}"
        )


def _print_long(costs: list[StepCost]) -> None:
    print(f"\nOurs over {LONG_STEPS} steps (bytes written per step should stay flat):")
    print(
        f"{'steps':>9} | {'req max':>7} {'KB wr mean':>10} {'KB wr max':>9} {'KB rd mean':>10} "
        f"{'WCU':>5} {'RCU':>5}"
    )
    for start in range(0, LONG_STEPS, 30):
        chunk = costs[start : start + 30]
        print(
            f"{start + 1:>4}-{start + len(chunk):<4} | {max(c.requests for c in chunk):>7} "
            f"{statistics.mean(c.bytes_written for c in chunk) / 1024:>10.2f} "
            f"{max(c.bytes_written for c in chunk) / 1024:>9.2f} "
            f"{statistics.mean(c.bytes_read for c in chunk) / 1024:>10.2f} "
            f"{sum(c.wcu for c in chunk):>5} {sum(c.rcu for c in chunk):>5}"
        )


if __name__ == "__main__":
    main()
