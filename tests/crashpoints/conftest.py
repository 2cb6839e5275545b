"""The crash-point environment fixture, and the "crash points explored: N" summary.

The summary is printed by ``pytest_terminal_summary`` when this conftest is loaded in the
process that prints (``pytest tests/crashpoints``, with or without ``-n``). Under
``make test`` (xdist, no path given) the controller never loads a sub-directory conftest, so
each crash-point test also reports its count as a ``CrashPointsExplored`` warning, which
xdist relays to the controller's warnings summary.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.crashpoints.harness import Environment

_EXPLORED: dict[str, tuple[int, int]] = {}


@pytest.fixture
def crash_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Environment]:
    """Simulated clock, fault hooks on the engine's boto3 clients, deployed timings."""
    # One EMF line per invocation of hundreds of replays: metrics go nowhere here.
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    # The engine's INFO logs for hundreds of replays are noise; warnings still show.
    loggers = [
        logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if name == "lambdagraph" or name.startswith("lambdagraph.")
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with Environment(moto_endpoint) as env:
            yield env
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call":
        return
    props = dict(report.user_properties)
    if "crash_points" in props:
        _EXPLORED[report.nodeid] = (int(props["crash_points"]), int(props["crash_replays"]))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _EXPLORED:
        return
    terminalreporter.write_sep("-", "crash points")
    for nodeid, (points, replays) in sorted(_EXPLORED.items()):
        terminalreporter.write_line(f"{nodeid}: {points} explored ({replays} replays)")
    points = sum(p for p, _ in _EXPLORED.values())
    replays = sum(r for _, r in _EXPLORED.values())
    terminalreporter.write_line(f"crash points explored: {points} ({replays} replays)")
