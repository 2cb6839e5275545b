"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol, with no
browser download and no driver: open a page, run a line of JavaScript (a click), wait for
the page that follows, read its text, take a screenshot.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

from websockets.sync.client import ClientConnection, connect

from .conftest import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    def __init__(self) -> None:
        if CHROMIUM is None:
            raise RuntimeError("chromium is not installed")
        self._profile = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
        self._port = free_port()
        self._process = subprocess.Popen(
            [
                CHROMIUM,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--window-size=900,900",
                f"--remote-debugging-port={self._port}",
                f"--user-data-dir={self._profile.name}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._exit = ExitStack()
        self._ws: ClientConnection = self._exit.enter_context(
            connect(self._page_socket(), max_size=None)
        )
        self._id = 0
        self._call("Page.enable")

    def _page_socket(self) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self._port}/json/list", timeout=2
                ) as r:
                    pages = [p for p in json.loads(r.read()) if p.get("type") == "page"]
                if pages:
                    return str(pages[0]["webSocketDebuggerUrl"])
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("chromium's DevTools endpoint did not come up")

    def _call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        call_id = self._id
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=60))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    def _wait_for_load(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            message = json.loads(self._ws.recv(timeout=60))
            if message.get("method") == "Page.loadEventFired":
                return
        raise RuntimeError("the page did not load")

    def open(self, url: str) -> None:
        self._call("Page.navigate", url=url)
        self._wait_for_load()

    def click(self, selector: str) -> None:
        """Click the element and wait for the page its form submits to."""
        self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")
        self._wait_for_load()

    def evaluate(self, expression: str) -> Any:
        result = self._call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def text(self) -> str:
        return str(self.evaluate("document.body.innerText"))

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self._call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self._exit.close()
        finally:
            self._process.terminate()
            self._process.wait(30)
            self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
