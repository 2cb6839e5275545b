"""API parity with LangGraph Platform, as the unmodified ``langgraph-sdk`` sees it.

Starts the local stack (``python -m infra.local``) and the official ``langgraph dev`` server
serving the same ``support`` graph, drives both with the same SDK calls, and prints one row
per call: status codes, response keys (recursively; ids and timestamps compared by type
only), statuses, the run-creation headers and error bodies. A tool for finding differences,
not part of ``make test`` (needs the ``bench`` extra: ``pip install 'langgraph-cli[inmem]'``).

Run with ``python -m bench sdk_parity``. ``PARITY_OURS_URL`` / ``PARITY_OFFICIAL_URL`` point
it at servers already running instead of starting them.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import SyncLangGraphClient

BILLING: dict[str, Any] = {
    "messages": [{"role": "user", "content": "I was charged twice on my invoice"}]
}
TECHNICAL: dict[str, Any] = {
    "messages": [{"role": "user", "content": "The app shows an error and crashes"}]
}
# LangGraph Platform's id for the default assistant of graph "support" (uuid5 of the name).
PLATFORM_SUPPORT_ID = str(uuid.uuid5(uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8"), "support"))
# Not a strategy: typed Any so the SDK call type-checks and the server gets to refuse it.
BOGUS_STRATEGY: Any = "bogus"
CANCEL: dict[str, Any] = {"messages": [{"role": "user", "content": "Please cancel my account"}]}

# Keys whose values are part of the contract (everything else is compared by type only:
# ids, timestamps and message ids differ between any two servers).
KEEP_VALUES = frozenset(
    {
        "status",
        "next",
        "type",
        "content",
        "route",
        "source",
        "step",
        "graph_id",
        "assistant_id",
        "multitask_strategy",
        "name",
        "when",
        "resumable",
        "ns",
        "action",
        "question",
    }
)
# Response headers a client reads.
HEADERS = ("content-location", "location", "content-type")


@dataclass
class Observation:
    """What one SDK call showed: last HTTP status, headers, and the result's shape."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    shape: Any = None
    error: str | None = None


@dataclass
class Row:
    step: str
    official: Observation
    ours: Observation
    diffs: list[str]


def shape(value: Any, key: str | None = None) -> Any:
    """The comparable skeleton of a JSON value."""
    if isinstance(value, dict):
        # Keys that are ids (a thread's interrupts by task id) compare as "<id>".
        return {("<id>" if _looks_like_id(k) else k): shape(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v, key) for v in value]
    if key in KEEP_VALUES:
        return value if not isinstance(value, str) or len(value) < 120 else "<long str>"
    return f"<{type(value).__name__}>"


def diff(official: Any, ours: Any, path: str = "$") -> list[str]:
    """Where ``ours`` differs from ``official`` (both skeletons)."""
    if isinstance(official, dict) and isinstance(ours, dict):
        out: list[str] = []
        for k in official.keys() - ours.keys():
            out.append(f"missing {path}.{k}")
        for k in ours.keys() - official.keys():
            out.append(f"extra {path}.{k}")
        for k in official.keys() & ours.keys():
            out += diff(official[k], ours[k], f"{path}.{k}")
        return out
    if isinstance(official, list) and isinstance(ours, list):
        out = []
        if len(official) != len(ours):
            out.append(f"len {path}: official {len(official)} ours {len(ours)}")
        for i, (a, b) in enumerate(zip(official, ours, strict=False)):
            out += diff(a, b, f"{path}[{i}]")
        return out
    if official != ours:
        return [f"value {path}: official {_short(official)} ours {_short(ours)}"]
    return []


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 160 else text[:157] + "..."


class Recorder:
    """Keeps the last HTTP response an SDK client got (status and headers)."""

    def __init__(self) -> None:
        self.responses: list[httpx.Response] = []

    def __call__(self, response: httpx.Response) -> None:
        self.responses.append(response)


def sdk_client(url: str) -> tuple[SyncLangGraphClient, Recorder]:
    # api_key="" keeps the SDK from sending a LangSmith key found in the environment.
    client = get_sync_client(url=url, api_key="", timeout=60)
    recorder = Recorder()
    client.http.client.event_hooks["response"].append(recorder)
    return client, recorder


Step = Callable[[SyncLangGraphClient, dict[str, Any]], Any]


def observe(
    client: SyncLangGraphClient, recorder: Recorder, ctx: dict[str, Any], step: Step
) -> Observation:
    recorder.responses.clear()
    obs = Observation()
    try:
        obs.shape = shape(step(client, ctx))
    except httpx.HTTPStatusError as exc:
        body: Any
        try:
            body = exc.response.json()
        except ValueError:
            body = exc.response.text
        obs.error = "HTTPStatusError"
        obs.shape = shape(body)
    except Exception as exc:
        obs.error = f"{type(exc).__name__}: {exc}"[:200]
    if recorder.responses:
        last = recorder.responses[-1]
        obs.status = last.status_code
        obs.headers = {h: _header_shape(last.headers[h]) for h in HEADERS if h in last.headers}
    return obs


def _header_shape(value: str) -> str:
    # /threads/<uuid>/runs/<uuid> -> /threads/{}/runs/{}
    parts = ["{}" if _looks_like_id(p) else p for p in value.split("/")]
    return "/".join(parts).split(";")[0]


def _looks_like_id(part: str) -> bool:
    try:
        uuid.UUID(part)
    except ValueError:
        return False
    return True


# --- the scenario: (name, step). Steps share a context dict (ids of this server). ------------


def _wait_status(client: SyncLangGraphClient, tid: str, rid: str, statuses: set[str]) -> Any:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        run = client.runs.get(tid, rid)
        if run["status"] in statuses:
            return run
        time.sleep(0.1)
    raise TimeoutError(f"run {rid} never reached {statuses}")


def _checkpoint(ctx: dict[str, Any], index: int) -> Any:
    """``{"checkpoint_id": ...}`` of the history entry ``index`` (as the SDK takes it)."""
    return {"checkpoint_id": ctx["history"][index]["checkpoint"]["checkpoint_id"]}


def _created(ctx: dict[str, Any], key: str) -> Callable[[Any], None]:
    def keep(meta: Any) -> None:
        ctx[key] = dict(meta)

    return keep


def scenario() -> list[tuple[str, Step]]:
    marker = str(uuid.uuid4())
    fixed_tid = str(uuid.uuid4())
    missing = str(uuid.uuid4())

    def thread(ctx: dict[str, Any], key: str, **kw: Any) -> Step:
        def run(c: SyncLangGraphClient, ctx: dict[str, Any]) -> Any:
            t = c.threads.create(**kw)
            ctx[key] = t["thread_id"]
            return t

        return run

    def t1_run(c: SyncLangGraphClient, ctx: dict[str, Any]) -> Any:
        r = c.runs.create(
            ctx["t1"],
            "support",
            input=BILLING,
            metadata={"purpose": "parity"},
            on_run_created=_created(ctx, "created_meta"),
        )
        ctx["r1"] = r["run_id"]
        return r

    def history(c: SyncLangGraphClient, ctx: dict[str, Any]) -> Any:
        h = c.threads.get_history(ctx["t1"], limit=20)
        ctx["history"] = h
        return h

    def interrupt_run(c: SyncLangGraphClient, ctx: dict[str, Any]) -> Any:
        t = c.threads.create()
        ctx["t2"] = t["thread_id"]
        r = c.runs.create(ctx["t2"], "support", input=CANCEL)
        ctx["r2"] = r["run_id"]
        return c.runs.join(ctx["t2"], r["run_id"])

    def resume(c: SyncLangGraphClient, ctx: dict[str, Any]) -> Any:
        r = c.runs.create(ctx["t2"], "support", command={"resume": "yes"})
        ctx["r2b"] = r["run_id"]
        return r

    def delayed(c: SyncLangGraphClient, ctx: dict[str, Any]) -> Any:
        t = c.threads.create()
        ctx["t4"] = t["thread_id"]
        r = c.runs.create(ctx["t4"], "support", input=BILLING, after_seconds=5)
        ctx["r4"] = r["run_id"]
        return r

    def enqueue(c: SyncLangGraphClient, ctx: dict[str, Any]) -> Any:
        r = c.runs.create(ctx["t4"], "support", input=TECHNICAL, multitask_strategy="enqueue")
        ctx["r4b"] = r["run_id"]
        return r

    def interrupt_strategy(c: SyncLangGraphClient, ctx: dict[str, Any]) -> Any:
        t = c.threads.create()
        ctx["t5"] = t["thread_id"]
        first = c.runs.create(ctx["t5"], "support", input=BILLING, after_seconds=5)
        ctx["r5"] = first["run_id"]
        second = c.runs.create(
            ctx["t5"], "support", input=TECHNICAL, multitask_strategy="interrupt"
        )
        ctx["r5b"] = second["run_id"]
        return c.runs.join(ctx["t5"], second["run_id"])

    def rollback_strategy(c: SyncLangGraphClient, ctx: dict[str, Any]) -> Any:
        t = c.threads.create()
        ctx["t6"] = t["thread_id"]
        first = c.runs.create(ctx["t6"], "support", input=BILLING, after_seconds=5)
        ctx["r6"] = first["run_id"]
        second = c.runs.create(ctx["t6"], "support", input=TECHNICAL, multitask_strategy="rollback")
        return c.runs.join(ctx["t6"], second["run_id"])

    def cancel_pending(c: SyncLangGraphClient, ctx: dict[str, Any]) -> Any:
        t = c.threads.create()
        ctx["t7"] = t["thread_id"]
        r = c.runs.create(ctx["t7"], "support", input=BILLING, after_seconds=5)
        ctx["r7"] = r["run_id"]
        return c.runs.cancel(ctx["t7"], r["run_id"])

    def stateless_create(c: SyncLangGraphClient, ctx: dict[str, Any]) -> Any:
        r = c.runs.create(None, "support", input=BILLING, on_run_created=_created(ctx, "sl"))
        ctx["sl_run"] = r
        return r

    steps: list[tuple[str, Step]] = [
        ("assistants.search()", lambda c, x: c.assistants.search()),
        ("assistants.search(graph_id)", lambda c, x: c.assistants.search(graph_id="support")),
        ("assistants.get(graph id)", lambda c, x: c.assistants.get("support")),
        ("assistants.get(platform id)", lambda c, x: c.assistants.get(PLATFORM_SUPPORT_ID)),
        ("assistants.get(unknown) 404", lambda c, x: c.assistants.get(missing)),
        ("assistants.get_graph", lambda c, x: c.assistants.get_graph("support")),
        (
            "assistants.get_schemas",
            lambda c, x: c.assistants.get_schemas(PLATFORM_SUPPORT_ID),
        ),
        (
            "assistants.get_subgraphs",
            lambda c, x: c.assistants.get_subgraphs(PLATFORM_SUPPORT_ID),
        ),
        ("threads.create(metadata)", lambda c, x: thread(x, "t1", metadata={"m": marker})(c, x)),
        (
            "threads.create(thread_id)",
            lambda c, x: c.threads.create(thread_id=fixed_tid, metadata={"fixed": True}),
        ),
        (
            "threads.create(if_exists=do_nothing)",
            lambda c, x: c.threads.create(thread_id=fixed_tid, if_exists="do_nothing"),
        ),
        ("threads.create(exists) 409", lambda c, x: c.threads.create(thread_id=fixed_tid)),
        ("threads.get", lambda c, x: c.threads.get(x["t1"])),
        ("threads.get(unknown) 404", lambda c, x: c.threads.get(missing)),
        (
            "threads.update(metadata)",
            lambda c, x: c.threads.update(x["t1"], metadata={"extra": 1}),
        ),
        ("threads.update(unknown) 404", lambda c, x: c.threads.update(missing, metadata={})),
        ("threads.search(metadata)", lambda c, x: c.threads.search(metadata={"m": marker})),
        (
            "threads.search(status,limit,offset)",
            lambda c, x: c.threads.search(status="idle", limit=2, offset=1),
        ),
        ("threads.get_state(empty)", lambda c, x: c.threads.get_state(x["t1"])),
        ("threads.get_history(empty)", lambda c, x: c.threads.get_history(x["t1"])),
        ("runs.create(metadata)", t1_run),
        ("  on_run_created metadata", lambda c, x: x.get("created_meta")),
        ("runs.join", lambda c, x: c.runs.join(x["t1"], x["r1"])),
        ("runs.get", lambda c, x: c.runs.get(x["t1"], x["r1"])),
        ("runs.list", lambda c, x: c.runs.list(x["t1"])),
        ("runs.list(status=success)", lambda c, x: c.runs.list(x["t1"], status="success")),
        ("threads.get(after run)", lambda c, x: c.threads.get(x["t1"])),
        ("threads.get_state", lambda c, x: c.threads.get_state(x["t1"])),
        ("threads.get_history(limit=20)", history),
        (
            "threads.get_history(limit=2)",
            lambda c, x: c.threads.get_history(x["t1"], limit=2),
        ),
        (
            "threads.get_history(before)",
            lambda c, x: c.threads.get_history(
                x["t1"], limit=2, before=x["history"][1]["checkpoint"]
            ),
        ),
        (
            "threads.get_history(before=id str)",
            lambda c, x: c.threads.get_history(
                x["t1"], limit=2, before=x["history"][1]["checkpoint"]["checkpoint_id"]
            ),
        ),
        (
            "threads.get_history(metadata)",
            lambda c, x: c.threads.get_history(x["t1"], metadata={"source": "input"}),
        ),
        (
            "threads.get_history(checkpoint)",
            lambda c, x: c.threads.get_history(
                x["t1"],
                limit=2,
                checkpoint=_checkpoint(x, 2),
            ),
        ),
        (
            "threads.get_state(checkpoint_id)",
            lambda c, x: c.threads.get_state(
                x["t1"], checkpoint_id=x["history"][2]["checkpoint"]["checkpoint_id"]
            ),
        ),
        (
            "threads.get_state(checkpoint)",
            lambda c, x: c.threads.get_state(
                x["t1"],
                checkpoint=_checkpoint(x, 2),
            ),
        ),
        (
            "threads.get_state(unknown ckpt)",
            lambda c, x: c.threads.get_state(x["t1"], checkpoint_id=str(uuid.uuid4())),
        ),
        ("runs.wait(thread)", lambda c, x: c.runs.wait(x["t1"], "support", input=TECHNICAL)),
        (
            "threads.update_state(as_node)",
            lambda c, x: c.threads.update_state(x["t1"], {"route": "general"}, as_node="classify"),
        ),
        ("threads.get_state(after update)", lambda c, x: c.threads.get_state(x["t1"])),
        (
            "runs.wait(checkpoint_id fork)",
            lambda c, x: c.runs.wait(
                x["t1"],
                "support",
                input=TECHNICAL,
                checkpoint_id=x["history"][0]["checkpoint"]["checkpoint_id"],
            ),
        ),
        ("interrupt: runs.join", interrupt_run),
        ("interrupt: runs.get", lambda c, x: c.runs.get(x["t2"], x["r2"])),
        ("interrupt: threads.get", lambda c, x: c.threads.get(x["t2"])),
        ("interrupt: threads.get_state", lambda c, x: c.threads.get_state(x["t2"])),
        (
            "interrupt: get_history(limit=1)",
            lambda c, x: c.threads.get_history(x["t2"], limit=1),
        ),
        (
            "interrupt: threads.search(status)",
            lambda c, x: [
                t["status"]
                for t in c.threads.search(status="interrupted", limit=1000)
                if t["thread_id"] == x["t2"]
            ],
        ),
        ("resume: runs.create(command)", resume),
        ("resume: runs.join", lambda c, x: c.runs.join(x["t2"], x["r2b"])),
        ("resume: threads.get", lambda c, x: c.threads.get(x["t2"])),
        ("resume: threads.get_state", lambda c, x: c.threads.get_state(x["t2"])),
        (
            "interrupt: runs.wait",
            lambda c, x: c.runs.wait(c.threads.create()["thread_id"], "support", input=CANCEL),
        ),
        ("busy: runs.create(after_seconds)", delayed),
        ("busy: threads.get", lambda c, x: c.threads.get(x["t4"])),
        (
            "busy: runs.create(reject) 409",
            lambda c, x: c.runs.create(
                x["t4"], "support", input=TECHNICAL, multitask_strategy="reject"
            ),
        ),
        (
            "busy: update_state 409",
            lambda c, x: c.threads.update_state(x["t4"], {"route": "x"}),
        ),
        ("busy: runs.create(enqueue)", enqueue),
        ("busy: runs.list", lambda c, x: c.runs.list(x["t4"])),
        ("busy: runs.join(enqueued)", lambda c, x: c.runs.join(x["t4"], x["r4b"])),
        (
            "busy: runs.list(after)",
            lambda c, x: [r["status"] for r in c.runs.list(x["t4"])],
        ),
        ("multitask interrupt: join", interrupt_strategy),
        (
            "multitask interrupt: old run",
            lambda c, x: c.runs.get(x["t5"], x["r5"]),
        ),
        ("multitask rollback: join", rollback_strategy),
        (
            "multitask rollback: old run 404",
            lambda c, x: c.runs.get(x["t6"], x["r6"]),
        ),
        ("runs.cancel(pending)", cancel_pending),
        (
            "runs.cancel: runs.get",
            lambda c, x: _wait_status(c, x["t7"], x["r7"], {"interrupted", "success", "error"}),
        ),
        ("runs.cancel: threads.get", lambda c, x: c.threads.get(x["t7"])),
        (
            "runs.cancel(finished) 409?",
            lambda c, x: c.runs.cancel(x["t1"], x["r1"]),
        ),
        (
            "runs.cancel(wait=True)",
            lambda c, x: c.runs.cancel(
                x["t7"],
                c.runs.create(x["t7"], "support", input=BILLING, after_seconds=5)["run_id"],
                wait=True,
            ),
        ),
        (
            "runs.wait(platform assistant id)",
            lambda c, x: c.runs.wait(x["t7"], PLATFORM_SUPPORT_ID, input=BILLING),
        ),
        ("runs.wait(None) stateless", lambda c, x: c.runs.wait(None, "support", input=BILLING)),
        ("runs.create(None) stateless", stateless_create),
        ("  stateless on_run_created", lambda c, x: x.get("sl")),
        ("runs.get(unknown) 404", lambda c, x: c.runs.get(x["t1"], missing)),
        ("runs.join(unknown) 404", lambda c, x: c.runs.join(x["t1"], missing)),
        ("runs.list(unknown thread)", lambda c, x: c.runs.list(missing)),
        (
            "runs.create(unknown thread) 404",
            lambda c, x: c.runs.create(missing, "support", input=BILLING),
        ),
        (
            "runs.create(unknown assistant) 404",
            lambda c, x: c.runs.create(x["t1"], missing, input=BILLING),
        ),
        (
            "runs.create(bad strategy) 422",
            lambda c, x: c.runs.create(
                x["t1"],
                "support",
                input=BILLING,
                multitask_strategy=BOGUS_STRATEGY,
            ),
        ),
        ("threads.delete", lambda c, x: c.threads.delete(x["t1"])),
        ("threads.get(deleted) 404", lambda c, x: c.threads.get(x["t1"])),
        ("threads.delete(unknown) 404", lambda c, x: c.threads.delete(missing)),
    ]
    return steps


def run_scenario(url: str, steps: list[tuple[str, Step]]) -> list[Observation]:
    client, recorder = sdk_client(url)
    ctx: dict[str, Any] = {}
    return [observe(client, recorder, ctx, step) for _, step in steps]


def compare(
    steps: list[tuple[str, Step]], official: list[Observation], ours: list[Observation]
) -> list[Row]:
    rows = []
    for (name, _), a, b in zip(steps, official, ours, strict=True):
        diffs = []
        if a.status != b.status:
            diffs.append(f"http status: official {a.status} ours {b.status}")
        if a.error != b.error:
            diffs.append(f"raised: official {a.error} ours {b.error}")
        for h in HEADERS:
            if a.headers.get(h) != b.headers.get(h):
                diffs.append(f"header {h}: official {a.headers.get(h)} ours {b.headers.get(h)}")
        diffs += _collapse(diff(a.shape, b.shape))
        rows.append(Row(name, a, b, diffs))
    return rows


def _collapse(diffs: list[str]) -> list[str]:
    """One line per difference, whatever list item it is in: ``$[3].x`` -> ``$[*].x``."""
    seen: dict[str, None] = {}
    for d in diffs:
        if d.startswith(("missing ", "extra ")):
            d = re.sub(r"\[\d+\]", "[*]", d)
        seen.setdefault(d, None)
    return list(seen)


# Differences documented in docs/run-path.md ("Differences from LangGraph Platform"): shown
# only with PARITY_ALL=1, so the table lists what is new.
KNOWN = tuple(
    re.compile(p)
    for p in (
        r"assistant_id: official '[0-9a-f-]{36}' ours 'support'",
        r"\$(\[\*\])?\.kwargs\.",
        r"(missing|extra) \$(\[\*\])?\.(langsmith_session_name|priority|error|interrupts)$",
        r"metadata\.(langgraph_\w+|user_id|run_attempt|thread_id)$",
        r"\.checkpoint_map$",
        r"\.config\.configurable$",
        r"description: official '<NoneType>' ours '<str>'",
        r"\.interrupts\.<id>\[\*\]\.response_schema$",
    )
)


def _known(d: str) -> bool:
    return any(p.search(d) for p in KNOWN)


def print_rows(rows: list[Row], show_known: bool = False) -> None:
    print(f"{'SDK call':<40} {'official':>8} {'ours':>6}  differences")
    for row in rows:
        shown = [d for d in row.diffs if show_known or not _known(d)]
        hidden = len(row.diffs) - len(shown)
        mark = "ok" if not shown else f"{len(shown)} diff(s)"
        if hidden:
            mark += f" (+{hidden} known)"
        print(f"{row.step:<40} {row.official.status or '-':>8} {row.ours.status or '-':>6}  {mark}")
        for d in shown:
            print(f"{'':<58}- {d}")
    same = sum(1 for r in rows if not r.diffs)
    only_known = sum(1 for r in rows if r.diffs and all(_known(d) for d in r.diffs))
    print(
        f"\n{len(rows)} SDK calls: {same} identical in shape, {only_known} with only known "
        f"differences, {len(rows) - same - only_known} with others (see docs/run-path.md)"
    )


@contextmanager
def servers(graphs: Mapping[str, str] | None = None) -> Iterator[tuple[str, str]]:
    """(official, ours) URLs: ``PARITY_OFFICIAL_URL``/``PARITY_OURS_URL`` when set, else
    ``langgraph dev`` (serving ``graphs``) and the local stack, started here."""
    from bench.local import langgraph_dev_server, local_server

    with ExitStack() as stack:
        official = os.environ.get("PARITY_OFFICIAL_URL")
        if not official:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            official, _ = stack.enter_context(langgraph_dev_server(tmp, graphs))
        ours = os.environ.get("PARITY_OURS_URL")
        if not ours:
            ours, _ = stack.enter_context(local_server())
        yield official, ours


def main() -> None:
    steps = scenario()
    try:
        with servers() as (official_url, ours_url):
            official = run_scenario(official_url, steps)
            ours = run_scenario(ours_url, steps)
    except RuntimeError as exc:
        # Without the bench extra (langgraph-cli[inmem]) there is nothing to compare with;
        # say so and let `make bench` go on with the other benchmarks.
        print(f"SDK parity not measured: {exc}")
        return
    print_rows(compare(steps, official, ours), show_known=bool(os.environ.get("PARITY_ALL")))


if __name__ == "__main__":
    main()
