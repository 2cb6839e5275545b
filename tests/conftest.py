"""Shared fixtures: one real moto server process-thread per pytest worker.

Tests talk to moto over HTTP, exactly as the local stack does, so what is tested is what
runs. Each test that needs fresh AWS state creates its own uniquely named resources.

Also: no secret may appear in any log output of the suite (see "no secret in any log
output" below; ``register_secret(value, label)`` declares one).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# tests.aws_calls: every AWS call each function makes, checked against tests/infra/aws_calls.json
# (IAM coverage; ``make aws-calls`` regenerates it).
pytest_plugins = ["pytester", "tests.aws_calls"]

REPO_ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_REGION", "us-east-1")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "lambdagraph")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "lambdagraph")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_DEV", "false")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """URL of a moto server running in this pytest worker."""
    from moto.server import ThreadedMotoServer

    from infra.local.moto_fidelity import serialise_dynamodb_requests

    # As on DynamoDB, a conditional write is checked and applied as one step (moto's server
    # handles requests on threads and would otherwise interleave them).
    serialise_dynamodb_requests()
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


# --- no process state carried from one test to the next --------------------------------------
#
# The engine keeps boto3 clients, secrets and settings in process-wide functools caches (as a
# Lambda environment does between invocations). A client cached by one test stays bound to that
# test's endpoint (a moto server since stopped, another stack's port), so every such cache is
# cleared around each test; a test that wants a warm process gets one within itself.


def forget_cached_state() -> None:
    """Clear every functools cache defined in the engine's modules (``functions.*``).

    Found by walking the loaded modules, so a cache added later is covered too.
    """
    import sys

    for name, module in list(sys.modules.items()):
        if module is None or not (name == "functions" or name.startswith("functions.")):
            continue
        for value in list(vars(module).values()):
            clear = getattr(value, "cache_clear", None)
            if callable(clear) and getattr(value, "__module__", None) == name:
                clear()


@pytest.fixture(autouse=True)
def _fresh_process_caches() -> Iterator[None]:
    forget_cached_state()
    yield
    forget_cached_state()


# --- no secret in any log output ----------------------------------------------------------------
#
# Every log record emitted during the session (the root logger, and Powertools loggers, which
# print JSON through their own handler and whose records root handlers filter out), everything
# pytest captured from stdout/stderr, and the local stack logs the e2e fixtures pass to
# ``scan_text`` are scanned for known secrets: the API keys the tests configure and any value
# registered with ``register_secret``. A leak fails the session (under xdist each worker scans
# its own output and hands its findings to the controller), naming the secret by its label and
# fingerprint and where it appeared, never by its value.

_SECRETS: dict[str, str] = {}
_SECRET_MIN_LENGTH = 5
# API keys the integration tests configure (tests/integration/conftest.py KEY_A, KEY_B).
_API_KEY_CONSTANTS = ("KEY_A", "KEY_B")
_LEAKS: list[dict[str, str]] = []
_CURRENT_TEST = ["(outside any test)"]


def register_secret(value: str, label: str = "secret") -> str:
    """Declare ``value`` (an approval token, a webhook secret, ...) as never to be logged.

    Returns the value, so ``token = register_secret(make_token(), "approval token")`` reads
    naturally. Values shorter than 5 characters are refused: they would match ordinary text.
    """
    if len(value) < _SECRET_MIN_LENGTH:
        raise ValueError(
            f"a secret needs at least {_SECRET_MIN_LENGTH} characters to be scanned for"
        )
    _SECRETS.setdefault(value, label)
    return value


def known_secrets() -> dict[str, str]:
    """value -> label of every secret known now."""
    import sys

    secrets = dict(_SECRETS)
    integration = sys.modules.get("tests.integration.conftest")
    for name in _API_KEY_CONSTANTS:
        value = getattr(integration, name, None)
        if isinstance(value, str) and len(value) >= _SECRET_MIN_LENGTH:
            secrets.setdefault(value, f"API key {name} (tests/integration)")
    for value in os.environ.get("LAMBDAGRAPH_API_KEYS", "").split(","):
        if len(value.strip()) >= _SECRET_MIN_LENGTH:
            secrets.setdefault(value.strip(), "API key from LAMBDAGRAPH_API_KEYS")
    return secrets


def _fingerprint(value: str) -> str:
    import hashlib

    return hashlib.sha256(value.encode()).hexdigest()[:12]


def find_leaks(text: str, secrets: dict[str, str]) -> list[tuple[str, str]]:
    """(label with fingerprint, masked line) for each secret found in ``text``."""
    found = []
    for value, label in secrets.items():
        index = text.find(value)
        if index < 0:
            continue
        start = text.rfind("\n", 0, index) + 1
        end = text.find("\n", index)
        line = text[start : end if end >= 0 else len(text)]
        for other, other_label in secrets.items():
            line = line.replace(other, f"<{other_label}>")
        found.append((f"{label} (sha256 {_fingerprint(value)})", line.strip()[:300]))
    return found


def scan_text(text: str, source: str) -> None:
    """Scan ``text`` (e.g. a subprocess's log file) now, as output of the current test."""
    for secret, line in find_leaks(text, known_secrets()):
        where = _CURRENT_TEST[0]
        # One entry per secret and test, listing every kind of output it showed up in.
        known = next((k for k in _LEAKS if (k["secret"], k["where"]) == (secret, where)), None)
        if known is None:
            _LEAKS.append({"secret": secret, "where": where, "source": source, "line": line})
        elif source not in known["source"].split("; "):
            known["source"] += f"; {source}"


class _LogScanHandler(logging.Handler):
    """Keeps the text of each record (as rendered by ``formatters`` too) until it is scanned."""

    def __init__(self, formatters: tuple[logging.Formatter, ...] = ()) -> None:
        super().__init__(logging.NOTSET)
        self._formatters = formatters
        self._plain = logging.Formatter("%(name)s %(levelname)s %(message)s")
        self._texts: list[str] = []
        self._texts_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            parts = [self._plain.format(record)]
            # Extra fields travel as record attributes; Powertools' formatter adds appended keys.
            parts += [f"{k}={v!r}" for k, v in vars(record).items() if k not in _RECORD_FIELDS]
            parts += [formatter.format(record) for formatter in self._formatters]
        except Exception:
            self.handleError(record)
            return
        with self._texts_lock:
            self._texts.append("\n".join(parts))

    def take(self) -> str:
        with self._texts_lock:
            texts, self._texts = self._texts, []
        return "\n".join(texts)


_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message"}
_SCAN_HANDLERS: dict[str, _LogScanHandler] = {}


def _attach_log_scanners() -> None:
    """A scan handler on the root logger and on every logger with a Powertools handler."""
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
        and (getattr(logger, "powertools_handler", None) is not None or not logger.propagate)
    ]
    for logger in loggers:
        if logger.name in _SCAN_HANDLERS:
            continue
        formatters = tuple(
            handler.formatter
            for handler in logger.handlers
            if handler.formatter is not None and not isinstance(handler, _LogScanHandler)
        )
        handler = _LogScanHandler(formatters)
        logger.addHandler(handler)
        _SCAN_HANDLERS[logger.name] = handler


def _scan_captured_logs() -> None:
    for name, handler in _SCAN_HANDLERS.items():
        text = handler.take()
        if text:
            scan_text(text, f"log records (logger {name or 'root'})")


def pytest_configure(config: pytest.Config) -> None:
    # The service's Powertools logger, configured now so its records are scanned from the start.
    from aws_lambda_powertools import Logger

    Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "lambdagraph"))
    _attach_log_scanners()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _scan_captured_logs()
    _CURRENT_TEST[0] = item.nodeid
    # Loggers configured since (a handler module imported by the last test) are scanned too.
    _attach_log_scanners()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "teardown":
        return
    # The teardown report carries what every phase of the test printed.
    for kind, text in (("stdout", report.capstdout), ("stderr", report.capstderr)):
        if text:
            scan_text(text, f"captured {kind}")
    _scan_captured_logs()


def pytest_testnodedown(node: Any, error: Any) -> None:
    # xdist controller: collect what each worker found in its own output.
    _LEAKS.extend(getattr(node, "workeroutput", {}).get("secret_leaks", []))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _CURRENT_TEST[0] = "(session end)"
    _scan_captured_logs()
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        # An xdist worker: the controller reports and fails the session.
        workeroutput["secret_leaks"] = list(_LEAKS)
        return
    if _LEAKS:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _LEAKS or hasattr(terminalreporter.config, "workeroutput"):
        return
    terminalreporter.section("secrets in log output", sep="=", red=True, bold=True)
    for leak in _LEAKS:
        terminalreporter.line(
            f"LEAK {leak['secret']} in {leak['where']} [{leak['source']}]: {leak['line']}",
            red=True,
        )
    terminalreporter.line(f"FAILED: {len(_LEAKS)} secret leak(s) in log output", red=True)
