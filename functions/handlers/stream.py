"""Stream function: the three SSE routes, served over HTTP for AWS Lambda Web Adapter.

Python has no native Lambda response streaming, so on AWS this function runs as a web
server (``run_stream.sh`` runs ``python -m functions.handlers.stream``; port ``PORT``, 8080
by default) behind Lambda Web Adapter in ``response_stream`` invoke mode; API Gateway's
stream routes use response transfer mode ``STREAM`` (infra/constructs/streaming.py). The
local stack serves the same ``serve`` from its own HTTP adapter (``local_answer``).
"""

from __future__ import annotations

import os
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aws_lambda_powertools import Logger

from functions.resources import STREAM_PORT, STREAM_READINESS_PATH
from functions.streaming.http import Answer, StreamServices, answer, is_stream_route, write_chunked
from functions.streaming.log import StreamLog

logger = Logger()


@cache
def default_services() -> StreamServices:
    from functions.handlers.api import default_services as api_services

    services = api_services()
    return StreamServices(
        threads=services.threads,
        runs=services.runs,
        log=StreamLog(services.runs.settings.runtime_table),
    )


def serve(
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    services: StreamServices | None = None,
) -> Answer | None:
    """The answer to a stream route, None for other paths: what this function does for
    each request, on AWS (``_Handler``) and on the local stack (``local_answer``)."""
    if not is_stream_route(method, path):
        return None
    return answer(services or default_services(), method, path, headers, body)


def local_answer(method: str, path: str, headers: dict[str, str], body: bytes) -> Answer | None:
    """For the local stack's adapter: the answer to a stream route, None for other paths."""
    return serve(method, path, headers, body)


def _plain(status: int, payload: bytes) -> Answer:
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
    return Answer(status, headers, iter([payload]))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.command == "GET" and self.path in ("/", STREAM_READINESS_PATH):
            # Lambda Web Adapter's readiness check.
            write_chunked(self, _plain(200, b'{"ok":true}'))
            return
        services = getattr(self.server, "services", None)
        result = serve(self.command, self.path, dict(self.headers.items()), body, services=services)
        if result is None:
            result = _plain(404, b'{"detail":"Not a stream route."}')
        write_chunked(self, result)

    do_GET = do_POST = _serve

    def log_message(self, format: str, *args: Any) -> None:
        logger.info(format % args)


def make_server(port: int, services: StreamServices | None = None) -> ThreadingHTTPServer:
    """The stream routes' web server on 127.0.0.1:``port`` (0: any free port), where Lambda
    Web Adapter forwards each invocation; ``services`` for tests (default: from settings)."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    server.daemon_threads = True
    server.services = services  # type: ignore[attr-defined]
    return server


def main() -> None:  # pragma: no cover - runs under Lambda Web Adapter
    port = int(os.environ.get("PORT", str(STREAM_PORT)))
    # Clients and imports during init, before Lambda Web Adapter sees the port ready, so the
    # first request does not pay for them.
    default_services()
    make_server(port).serve_forever()


if __name__ == "__main__":  # pragma: no cover
    main()
