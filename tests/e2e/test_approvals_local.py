"""Human approval on the local stack as users run it (``python -m infra.local``): the email
shows up at ``GET /_local/emails``, its link opens the page (headless Chromium takes a
screenshot of it, kept as a test artifact), Approve resumes the run to success, and a second
decision is refused.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode

import pytest

from infra.local.stack import wait_until_ok
from tests.conftest import register_secret, scan_text

from .chromium import CHROMEDRIVER, CHROMIUM, Browser
from .conftest import REPO, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("approvals-local")]

# Not registered as a secret: the stack's first-run help prints the key on purpose.
KEY = "approvals-e2e-key-0123456789"
REVIEWER = "reviewer@example.com"
ARTIFACTS = Path(os.environ.get("LAMBDAGRAPH_TEST_ARTIFACTS", REPO / "build" / "test-artifacts"))
LINK = re.compile(r"http://[^\s\"<>]+/approvals/[^\s\"<>?]+\?token=[^\s\"<>]+")


def _call(url: str, method: str = "GET", body: Any = None, **headers: str) -> tuple[int, Any]:
    data = None
    if body is not None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as exc:
        text, status = exc.read().decode(), exc.code
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[str, Path]]:
    port = free_port()
    env = {
        **os.environ,
        "LAMBDAGRAPH_PORT": str(port),
        "LAMBDAGRAPH_MOTO_PORT": "0",
        "LAMBDAGRAPH_API_KEYS": KEY,
        "LAMBDAGRAPH_REVIEWERS": REVIEWER,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("LAMBDAGRAPH_APPROVAL_SIGNING_KEY", None)  # generated for the session
    log_path = Path(tempfile.gettempdir()) / f"lambdagraph-approvals-e2e-{port}.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "infra.local"],
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_until_ok(url, timeout_s=60)
            except TimeoutError:
                pytest.fail(f"local stack did not start; its log:\n{log_path.read_text()}")
            yield url, log_path
        finally:
            process.terminate()
            process.wait(30)
            scan_text(log_path.read_text(), "local stack log (approvals e2e)")


def _wait(predicate: Any, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError("timed out")


@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)
def test_the_emailed_link_approves_and_the_run_resumes(stack: tuple[str, Path]) -> None:
    url, log_path = stack
    auth = {"x-api-key": KEY, "Content-Type": "application/json"}
    # GIVEN the start-up line that says where mail goes
    assert "/_local/emails" in log_path.read_text()
    # WHEN a customer asks for a refund
    status, thread = _call(f"{url}/threads", "POST", {}, **auth)
    assert status == 200
    thread_id = thread["thread_id"]
    text = "I was charged twice, please refund $49"
    status, run = _call(
        f"{url}/threads/{thread_id}/runs",
        "POST",
        {"assistant_id": "support", "input": {"messages": [{"role": "user", "content": text}]}},
        **auth,
    )
    assert status == 200, run

    # THEN the reviewer's email arrives, with the link
    def email() -> dict[str, Any] | None:
        _, emails = _call(f"{url}/_local/emails")
        mine = [e for e in emails if REVIEWER in e["to"] and "$49" in e["subject"]]
        return mine[-1] if mine else None

    mail = _wait(email)
    assert set(mail) >= {"to", "subject", "text", "html", "sent_at"}
    link = LINK.findall(mail["text"])[0]
    register_secret(link.split("token=", 1)[1], "approval link token (e2e)")
    register_secret(unquote(link.split("token=", 1)[1]), "approval link token (e2e)")
    assert thread_id in mail["text"]
    # AND the link opens the page, which changes nothing
    status, page = _call(link)
    assert status == 200
    assert "Refund $49 to the customer" in page
    status, listed = _call(f"{url}/threads/{thread_id}/approvals", **auth)
    assert listed[0]["status"] == "pending"
    with Browser() as browser, Browser() as other_tab:
        # WHEN the reviewer opens the link in a browser (screenshot kept as an artifact),
        # and in a second browser, whose page stays open with its buttons
        browser.open(link)
        assert "Refund $49 to the customer" in browser.text()
        browser.screenshot(ARTIFACTS / "approval-page.png")
        other_tab.open(link)
        # AND clicks Approve
        browser.evaluate("document.querySelector('#comment').value = 'duplicate charge'")
        browser.click("button.approve")
        assert "your decision is recorded" in browser.text()
        browser.screenshot(ARTIFACTS / "approval-decided.png")
        # THEN opening the link again shows the recorded decision, with no buttons
        browser.open(link)
        shown = browser.text()
        assert "already decided: approved" in shown
        assert browser.evaluate("document.querySelectorAll('button').length") == 0
        # AND a second click, on the page still open in the other browser, is refused
        other_tab.click("button.reject")
        assert "already decided: approved" in other_tab.text()
        other_tab.screenshot(ARTIFACTS / "approval-second-click.png")
    form = urlencode({"token": unquote(link.split("token=", 1)[1]), "decision": "approve"})

    # THEN the run resumes by itself and completes the refund
    def resumed() -> bool:
        _, runs = _call(f"{url}/threads/{thread_id}/runs", **auth)
        return len(runs) == 2 and all(r["status"] == "success" for r in runs)

    _wait(resumed)
    _, state = _call(f"{url}/threads/{thread_id}/state", **auth)
    assert state["values"]["messages"][-1]["content"] == "Your refund of $49 has been issued."
    _, listed = _call(f"{url}/threads/{thread_id}/approvals", **auth)
    assert listed[0]["decision"]["comment"] == "duplicate charge"
    assert listed[0]["decision"]["reviewer"] == REVIEWER
    # AND a second submission is refused, showing the recorded decision
    status, again = _call(
        link.split("?")[0], "POST", form, **{"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 409
    assert "already decided" in again
