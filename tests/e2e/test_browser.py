"""A browser calls the local API from a page of another origin (CORS), as LangGraph Studio or
Agent Chat UI would: headless Chromium (Debian's ``chromium``) runs ``fetch`` with an API
key, which makes it send a preflight first.

The page reports what it saw back to its own server (same origin, no CORS needed there).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from .api_stack import running
from .conftest import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("browser")]

KEY = "browser-test-key-0123456789"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PAGE = """<!doctype html>
<html><head><title>lambdagraph from another origin</title></head><body><script>
(async () => {
  const api = "%(api)s";
  const report = (data) => fetch("/result", {method: "POST", body: JSON.stringify(data)});
  try {
    const created = await fetch(api + "/threads", {
      method: "POST",
      headers: {"x-api-key": "%(key)s", "Content-Type": "application/json"},
      body: JSON.stringify({metadata: {from: "browser"}}),
    });
    const thread = await created.json();
    const denied = await fetch(api + "/threads", {
      method: "POST",
      headers: {"x-api-key": "not-a-key", "Content-Type": "application/json"},
      body: "{}",
    });
    await report({
      status: created.status, thread: thread,
      denied: denied.status, deniedBody: await denied.json(),
    });
  } catch (error) {
    await report({error: String(error)});
  }
})();
</script></body></html>
"""


class PageServer:
    """Serves the page on its own origin and keeps what the page reports."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.api = ""
        self.result: dict[str, Any] | None = None
        self.reported = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        page = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = (PAGE % {"api": page.api, "key": KEY}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                page.result = json.loads(self.rfile.read(length))
                page.reported.set()
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def page() -> Iterator[PageServer]:
    server = PageServer(free_port())
    yield server
    server.close()


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_a_page_from_another_origin_calls_the_api_with_an_api_key(page: PageServer) -> None:
    # GIVEN the local API allowing the page's origin, and the page that calls it
    env = {"LAMBDAGRAPH_API_KEYS": KEY, "LAMBDAGRAPH_CORS_ORIGINS": page.origin}
    # Chromium's helper processes may still write the profile as it is removed: ignored.
    with (
        running(free_port(), env) as api_url,
        tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile,
    ):
        page.api = api_url
        # WHEN headless Chromium opens the page
        browser = subprocess.Popen(
            [
                str(CHROMIUM),
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                f"--user-data-dir={profile}",
                f"{page.origin}/",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            reported = page.reported.wait(60)
        finally:
            browser.terminate()
            browser.wait(30)

    # THEN its fetch got the thread, and a wrong key's refusal was readable too
    assert reported, "the page never reported (did Chromium start?)"
    result = page.result or {}
    assert "error" not in result, result
    assert result["status"] == 200
    assert result["thread"]["metadata"] == {"from": "browser"}
    assert result["denied"] == 401
    assert "detail" in result["deniedBody"]
