"""Serve a Lambda API handler over real HTTP, as API Gateway (REST API, proxy integration) does.

Each request becomes a v1 proxy event; the handler's response dict becomes the HTTP
response. The adapter enforces nothing the API itself owns (auth, validation, the 1 MiB
body limit, CORS preflights): it only refuses bodies no API Gateway would pass on (over
10 MiB, 413) and, like API Gateway, answers 502 when the handler raises and 504 when it has
not answered within the integration timeout (29 s, ``API_GATEWAY_TIMEOUT_S``; the handler
goes on running, as a Lambda function would). Those answers of its own carry CORS headers
for an allowed origin (``LAMBDAGRAPH_CORS_ORIGINS``), as the deployed gateway responses do.

Requests are served on threads; the handler itself runs in an execution environment that
takes one event at a time (``infra.local.environments``).

A few ``GET /_local/...`` paths belong to the local stack itself (``local_routes``, e.g.
``/_local/faults``): the adapter answers them with JSON and they never reach the API
handler; no such path exists on AWS.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from functions.api_cors import allowed_origins, origin_allowed, response_headers
from functions.resources import API_GATEWAY_TIMEOUT_S
from infra.local.lambda_context import ACCOUNT_ID

log = logging.getLogger(__name__)

Invoke = Callable[[dict[str, Any]], Any]
LocalRoute = Callable[[], Any]
# (method, path, headers, body) -> an answer streamed in chunks, or None: not a stream route.
StreamRoute = Callable[[str, str, dict[str, str], bytes], Any]

MAX_BODY_BYTES = 10 * 1024 * 1024
STAGE = "local"
# The listen backlog. The stdlib's is 5: a burst of clients (an evaluation suite starting
# 50 conversations at once) got connection resets while the serving threads were busy
# accepting; API Gateway queues such a burst, so the local gateway does too.
LISTEN_BACKLOG = 1024


class _GatewayHTTPServer(ThreadingHTTPServer):
    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True


class ApiGatewayServer:
    """A threading HTTP server that turns requests into API Gateway events for ``invoke``.

    ``invoke`` runs the API handler on one event (``EnvironmentPool.invoke``: one event at a
    time per execution environment, as on Lambda).
    """

    def __init__(
        self,
        invoke: Invoke,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        local_routes: Mapping[str, LocalRoute] | None = None,
        integration_timeout_s: float = API_GATEWAY_TIMEOUT_S,
        stream: StreamRoute | None = None,
        reports_start: bool = False,
    ) -> None:
        self._invoke = invoke
        # ``invoke`` takes ``started=`` and calls it when an environment takes the event
        # (``EnvironmentPool.invoke``): the integration timeout runs from then, so a burst
        # waiting for environments queues instead of timing out (on AWS, Lambda scales out).
        self._reports_start = reports_start
        # The SSE routes, written chunk by chunk as API Gateway's response streaming does
        # (functions.streaming.http); everything else goes through ``invoke`` whole.
        self.stream = stream
        self.integration_timeout_s = integration_timeout_s
        # GET path -> a callable whose result the adapter answers as JSON itself.
        self.local_routes = dict(local_routes or {})
        self._server = _GatewayHTTPServer((host, port), _make_request_handler(self))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="api-gateway"
        )
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5.0)

    def invoke(
        self, event: dict[str, Any], started: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        if self._reports_start:
            result = self._invoke(event, started=started)  # type: ignore[call-arg]
        else:
            result = self._invoke(event)
        if not isinstance(result, dict) or "statusCode" not in result:
            raise TypeError(f"API handler returned {type(result).__name__} without a statusCode")
        return result

    def invoke_within_timeout(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """The handler's response, or None when it did not answer within the integration
        timeout (it keeps running on its thread, as Lambda keeps running the function)."""
        outcome: dict[str, Any] = {}
        started = threading.Event()
        if not self._reports_start:
            started.set()

        def call() -> None:
            try:
                outcome["result"] = self.invoke(event, started=started.set)
            except Exception as exc:
                outcome["error"] = exc
            finally:
                started.set()

        worker = threading.Thread(target=call, name="api-integration", daemon=True)
        worker.start()
        started.wait()  # queued for an environment: no timeout yet
        worker.join(self.integration_timeout_s)
        if worker.is_alive():
            return None
        if "error" in outcome:
            raise outcome["error"]
        result: dict[str, Any] = outcome["result"]
        return result


def build_event(
    *,
    method: str,
    raw_path: str,
    headers: list[tuple[str, str]],
    body: bytes,
    source_ip: str,
    host: str,
) -> dict[str, Any]:
    """An API Gateway REST (v1) proxy event, as a ``{proxy+}`` resource on stage ``local`` sends it."""
    split = urlsplit(raw_path)
    path = split.path or "/"
    single_headers: dict[str, str] = {}
    multi_headers: dict[str, list[str]] = {}
    for name, value in headers:
        single_headers[name] = value
        multi_headers.setdefault(name, []).append(value)
    query = parse_qsl(split.query, keep_blank_values=True)
    single_query: dict[str, str] = {}
    multi_query: dict[str, list[str]] = {}
    for name, value in query:
        single_query[name] = value
        multi_query.setdefault(name, []).append(value)
    text, is_base64 = _event_body(body, single_headers)
    now = datetime.now(UTC)
    lowered = {name.lower(): value for name, value in single_headers.items()}
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": single_headers or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": single_query or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": "local",
            "resourceId": "proxy",
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": f"/{STAGE}{path}",
            "stage": STAGE,
            "protocol": "HTTP/1.1",
            "requestId": str(uuid.uuid4()),
            "extendedRequestId": str(uuid.uuid4()),
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "domainName": host,
            "domainPrefix": host.split(".")[0].split(":")[0],
            "identity": {
                "sourceIp": source_ip,
                "userAgent": lowered.get("user-agent"),
                "apiKey": lowered.get("x-api-key"),
                "accountId": None,
                "caller": None,
                "user": None,
                "userArn": None,
                "cognitoIdentityId": None,
                "cognitoIdentityPoolId": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "accessKey": None,
            },
        },
        "body": text,
        "isBase64Encoded": is_base64,
    }


def _event_body(body: bytes, headers: dict[str, str]) -> tuple[str | None, bool]:
    if not body:
        return None, False
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    textual = not content_type or any(
        marker in content_type.lower() for marker in ("json", "text", "xml", "form-urlencoded")
    )
    if textual:
        try:
            return body.decode("utf-8"), False
        except UnicodeDecodeError:
            # Not valid UTF-8 after all: pass it on untouched, as binary media would be.
            pass
    return base64.b64encode(body).decode("ascii"), True


def response_parts(result: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body bytes of a proxy integration response."""
    status = int(result["statusCode"])
    headers: list[tuple[str, str]] = []
    multi = result.get("multiValueHeaders") or {}
    for name, values in multi.items():
        headers += [(name, str(value)) for value in values]
    for name, value in (result.get("headers") or {}).items():
        # As API Gateway does, multiValueHeaders win when both name the same header.
        if name.lower() not in {n.lower() for n in multi}:
            headers.append((name, str(value)))
    raw = result.get("body") or ""
    body = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode("utf-8")
    return status, headers, body


# Query parameters that carry secrets (an approval link's token): never logged.
_SECRET_QUERY = re.compile(r"([?&](?:token|api_key)=)[^&#]*", re.IGNORECASE)


def loggable_path(path: str) -> str:
    """The request path as logged: secret query values replaced by ``***``."""
    return _SECRET_QUERY.sub(r"\1***", path)


def _cors_origins() -> frozenset[str]:
    from functions.settings import get_settings

    return allowed_origins(get_settings().cors_origins)


def _make_request_handler(server: ApiGatewayServer) -> type[BaseHTTPRequestHandler]:
    class RequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "lambdagraph-local"

        def do_GET(self) -> None:
            self._proxy()

        do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_TRACE = do_GET

        def __getattr__(self, name: str) -> Any:
            # Any other method (QUERY, PROPFIND, ...) goes to the API too, which answers 404:
            # http.server would answer 501 itself, a 5xx for a client's request.
            if name.startswith("do_"):
                return self.do_GET
            raise AttributeError(name)

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            # _proxy logs each request itself, with its duration.
            return

        def log_message(self, format: str, *args: Any) -> None:
            # Only errors http.server reports itself (malformed request lines) get here.
            log.warning("%s - %s", self.address_string(), format % args)

        def _proxy(self) -> None:
            started = time.perf_counter()
            body = self._read_body()
            if body is None:
                return
            local = server.local_routes.get(urlsplit(self.path).path)
            if local is not None and self.command == "GET":
                self._send_json(HTTPStatus.OK, local())
                return
            if server.stream is not None:
                streamed = server.stream(self.command, self.path, dict(self.headers.items()), body)
                if streamed is not None:
                    from functions.streaming.http import write_chunked

                    write_chunked(self, streamed, head_only=self.command == "HEAD")
                    log.info("%s %s -> %d (stream)", self.command, self.path, streamed.status)
                    return
            event = build_event(
                method=self.command,
                raw_path=self.path,
                headers=list(self.headers.items()),
                body=body,
                source_ip=self.client_address[0],
                host=self.headers.get("Host", "127.0.0.1"),
            )
            try:
                result = server.invoke_within_timeout(event)
            except Exception:
                # API Gateway answers a failed integration with 502; the traceback goes to the log.
                log.exception("API handler failed on %s %s", self.command, self.path)
                self._send_json(HTTPStatus.BAD_GATEWAY, {"message": "Internal server error"})
                return
            if result is None:
                log.error(
                    "API handler did not answer %s %s within %.0f s: 504",
                    self.command,
                    self.path,
                    server.integration_timeout_s,
                )
                self._send_json(
                    HTTPStatus.GATEWAY_TIMEOUT, {"message": "Endpoint request timed out"}
                )
                return
            status, headers, payload = response_parts(result)
            self._send(status, headers, payload)
            log.info(
                "%s %s -> %d (%.0f ms)",
                self.command,
                loggable_path(self.path),
                status,
                (time.perf_counter() - started) * 1000,
            )

        def _read_body(self) -> bytes | None:
            """The request body, or None once an error response has been sent."""
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                return self._read_chunked()
            length_header = self.headers.get("Content-Length", "0") or "0"
            if not length_header.isdigit():
                self._send_json(HTTPStatus.BAD_REQUEST, {"detail": "Invalid Content-Length"})
                return None
            length = int(length_header)
            if length > MAX_BODY_BYTES:
                self._too_large()
                return None
            return self.rfile.read(length)

        def _read_chunked(self) -> bytes | None:
            chunks: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # Trailers end with an empty line.
                    while self.rfile.readline().strip():
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY_BYTES:
                    self._too_large()
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline()

        def _too_large(self) -> None:
            self.close_connection = True
            self._send_json(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                {"detail": f"Request body over {MAX_BODY_BYTES} bytes"},
            )

        def _send_json(self, status: HTTPStatus, payload: Any) -> None:
            """An answer of the gateway's own (the handler's carry their own headers)."""
            body = json.dumps(payload).encode("utf-8")
            headers = [("Content-Type", "application/json")]
            origin = self.headers.get("Origin")
            if origin_allowed(origin, _cors_origins()):
                headers += list(response_headers(origin).items())
            self._send(int(status), headers, body)

        def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return RequestHandler
