"""An API answer with a 5xx status is counted, in total and for the function version that gave
it: what the API's canary alarm reads (Lambda's own Errors stays 0 for an answered 500)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from functions.resources import METRIC_API_SERVER_ERRORS, METRIC_VERSION_DIMENSION
from functions.threads import ThreadService
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration


def _emf_records(text: str) -> list[dict[str, Any]]:
    records = []
    for line in text.splitlines():
        if line.startswith('{"_aws"'):
            records.append(json.loads(line))
    return records


def test_a_500_is_counted_for_its_function_version(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a bug behind a route
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("a bug in the new release")

    monkeypatch.setattr(ThreadService, "get", broken)
    capsys.readouterr()

    # WHEN a client hits it
    reply = stack.api("GET", "/threads/some-thread")

    # THEN the client gets a 500, and the count goes out once in total and once per version
    assert reply.status == 500
    counted = [r for r in _emf_records(capsys.readouterr().out) if METRIC_API_SERVER_ERRORS in r]
    dimension_sets = sorted(
        tuple(r["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]) for r in counted
    )
    assert dimension_sets == [("service",), ("service", METRIC_VERSION_DIMENSION)]
    by_version = next(r for r in counted if METRIC_VERSION_DIMENSION in r)
    assert by_version[METRIC_VERSION_DIMENSION] == "$LATEST"  # outside Lambda


def test_client_errors_are_not_counted(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert stack.api("GET", "/threads/missing").status == 404
    assert stack.api("POST", "/threads", raw_body="{").status == 422
    assert not [r for r in _emf_records(capsys.readouterr().out) if METRIC_API_SERVER_ERRORS in r]
