"""Stream parity with LangGraph Platform, as the unmodified ``langgraph-sdk`` sees it.

Starts the local stack (``python -m infra.local``) and the official ``langgraph dev`` server
serving the same ``support`` and ``research`` graphs (``bench.local``), streams the same runs
from both with ``client.runs.stream`` and compares, event by event, the names, their order
and the data's shape (``tests.stream_parity.comparable``: ids, timestamps and run metadata
by type only) for ``values``, ``updates``, ``custom`` and ``messages-tuple``, alone and
together, with subgraphs and an interrupt. The differences found and why they are there:
docs/streaming.md ("Parity with langgraph dev").

Run with ``python -m bench stream_parity`` (part of ``make bench``; needs the ``bench``
extra, ``langgraph-cli[inmem]``). ``PARITY_OURS_URL`` / ``PARITY_OFFICIAL_URL`` point it at
servers already running; ``PARITY_SHOW=1`` prints every event of a differing scenario.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from langgraph_sdk import get_sync_client

from bench.sdk_parity import servers
from tests.stream_parity import comparable, shape

BILLING: dict[str, Any] = {
    "messages": [{"role": "user", "content": "I was charged twice on my invoice"}]
}
CANCEL: dict[str, Any] = {"messages": [{"role": "user", "content": "Please cancel my account"}]}
RESEARCH: dict[str, Any] = {"messages": [{"role": "user", "content": "What is a superstep?"}]}
MODES = ["values", "updates", "custom", "messages-tuple"]
GRAPHS = {
    "support": "graphs.support.graph:build_graph",
    "research": "graphs.research.graph:build_graph",
}


@dataclass(frozen=True)
class Scenario:
    name: str
    graph: str
    input: Any
    modes: list[str]
    subgraphs: bool = False


def scenarios() -> list[Scenario]:
    out = [Scenario(f"support, {mode}", "support", BILLING, [mode]) for mode in MODES]
    out += [
        Scenario("support, all four", "support", BILLING, MODES),
        Scenario("support interrupt (approval), all four", "support", CANCEL, MODES),
        Scenario("research, all four", "research", RESEARCH, MODES),
        Scenario("research subgraphs, all four", "research", RESEARCH, MODES, subgraphs=True),
        Scenario(
            "research subgraphs + interrupt, values",
            "research",
            {**RESEARCH, "review": True},
            ["values"],
            subgraphs=True,
        ),
        Scenario(
            "research subgraphs + interrupt, all four",
            "research",
            {**RESEARCH, "review": True},
            MODES,
            subgraphs=True,
        ),
    ]
    return out


@dataclass
class Streamed:
    metadata: Any = None
    events: list[tuple[str, Any]] = field(default_factory=list)
    error: str | None = None


def stream(url: str, scenario: Scenario) -> Streamed:
    # api_key="" keeps the SDK from sending a LangSmith key found in the environment.
    client = get_sync_client(url=url, api_key="", timeout=120)
    out = Streamed()
    try:
        thread = client.threads.create()
        for part in client.runs.stream(
            thread["thread_id"],
            scenario.graph,
            input=scenario.input,
            stream_mode=scenario.modes,  # type: ignore[arg-type]
            stream_subgraphs=scenario.subgraphs,
        ):
            if part.event == "metadata":
                out.metadata = part.data
            else:
                out.events.append((part.event, part.data))
    except Exception as exc:
        out.error = f"{type(exc).__name__}: {exc}"[:300]
    return out


def differences(official: Streamed, ours: Streamed) -> list[str]:
    """What differs, as lines: the metadata event's keys, then the events' diff."""
    diffs: list[str] = []
    if official.error != ours.error:
        diffs.append(f"raised: official {official.error} ours {ours.error}")
    if shape(official.metadata) != shape(ours.metadata):
        diffs.append(f"metadata: official {shape(official.metadata)} ours {shape(ours.metadata)}")
    a = [_line(e) for e in comparable(official.events)]
    b = [_line(e) for e in comparable(ours.events)]
    if a != b:
        for line in difflib.unified_diff(a, b, "official", "ours", n=1, lineterm=""):
            if not line.startswith(("---", "+++")):
                diffs.append(line if len(line) <= 400 else line[:397] + "...")
    return diffs


def _line(event: tuple[str, Any]) -> str:
    name, data = event
    return f"{name} {json.dumps(data, sort_keys=True)}"


def main() -> None:
    try:
        with servers(GRAPHS) as (official_url, ours_url):
            rows = []
            for scenario in scenarios():
                official, ours = stream(official_url, scenario), stream(ours_url, scenario)
                rows.append((scenario, official, ours, differences(official, ours)))
    except RuntimeError as exc:
        # Without the bench extra there is nothing to compare with: say so, go on.
        print(f"stream parity not measured: {exc}")
        return
    same = 0
    print(f"{'scenario':<44} {'events':>14}  result")
    for scenario, official, ours, diffs in rows:
        counts = f"{len(official.events)}/{len(ours.events)}"
        print(
            f"{scenario.name:<44} {counts:>14}  {'same' if not diffs else f'{len(diffs)} diff line(s)'}"
        )
        same += not diffs
        for line in diffs:
            print(f"    {line}")
        if diffs and os.environ.get("PARITY_SHOW"):
            for label, streamed in (("official", official), ("ours", ours)):
                print(f"  -- {label}")
                for name, data in streamed.events:
                    print(f"     {name} {json.dumps(data)[:300]}")
    print(
        f"\n{len(rows)} streams (events official/ours): {same} the same in names, order and "
        f"shapes, {len(rows) - same} differing (docs/streaming.md, Parity with langgraph dev)"
    )


if __name__ == "__main__":
    main()
