"""The stream routes as plain HTTP: request in, status + headers + an iterator of bytes out.

Served by the local stack's HTTP adapter (chunked, in the request's thread) and, on AWS, by
``functions.handlers.stream`` under AWS Lambda Web Adapter with response streaming. The JSON
routes stay with the API function; these three never reach it:

- ``POST /threads/{thread_id}/runs/stream``: create a run and stream it;
- ``POST /runs/stream``: the same on a new thread (kept, as ``POST /runs`` keeps it);
- ``GET /threads/{thread_id}/runs/{run_id}/stream``: join a run's stream (``stream_mode``
  query parameters, ``Last-Event-ID`` header).

A client that goes away mid-stream ends the tail. When it asked for ``on_disconnect:
"cancel"`` (the create routes' body) or ``cancel_on_disconnect=true`` (the join's query, as
the official server), its run is cancelled as ``POST .../cancel`` does (``action``
``interrupt``); the default, ``continue``, lets the run go on.
"""

from __future__ import annotations

import json
import re
import select
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from aws_lambda_powertools import Logger
from pydantic import ValidationError

from functions.api_cors import allowed_origins, origin_allowed, response_headers
from functions.api_models import RunCreate, ThreadCreate
from functions.auth import authenticate
from functions.errors import InfrastructureError, LambdagraphError, NotFoundError
from functions.resources import API_MAX_BODY_BYTES
from functions.runs import RunService
from functions.streaming.log import StreamLog
from functions.streaming.modes import DEFAULT_MODES, normalise
from functions.streaming.service import StreamTail
from functions.threads import ThreadService

logger = Logger(child=True)

_CREATE = re.compile(r"^/threads/(?P<thread_id>[^/]+)/runs/stream$")
_STATELESS = re.compile(r"^/runs/stream$")
_JOIN = re.compile(r"^/threads/(?P<thread_id>[^/]+)/runs/(?P<run_id>[^/]+)/stream$")


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: Iterator[bytes] = field(default_factory=lambda: iter(()))
    # Called once if the client goes away before the body ends (``on_disconnect: "cancel"``).
    on_disconnect: Callable[[], None] | None = None


@dataclass
class StreamServices:
    threads: ThreadService
    runs: RunService
    log: StreamLog


def is_stream_route(method: str, path: str) -> bool:
    path = urlsplit(path).path
    if method == "POST":
        return bool(_CREATE.match(path) or _STATELESS.match(path))
    return method == "GET" and bool(_JOIN.match(path))


def _json(status: int, body: Any) -> Answer:
    payload = json.dumps(body, separators=(",", ":")).encode()
    return Answer(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
        iter([payload]),
    )


def _detail(status: int, detail: Any) -> Answer:
    return _json(status, {"detail": detail})


def answer(
    services: StreamServices,
    method: str,
    raw_path: str,
    headers: Mapping[str, str],
    body: bytes,
) -> Answer:
    """The answer to one stream request (``is_stream_route`` says which requests are)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    result = _answer(services, method, raw_path, lowered, body)
    origins = allowed_origins(services.runs.settings.cors_origins)
    origin = lowered.get("origin")
    if origin_allowed(origin, origins):
        result.headers += list(response_headers(origin).items())
    return result


def _answer(
    services: StreamServices,
    method: str,
    raw_path: str,
    headers: dict[str, str],
    body: bytes,
) -> Answer:
    split = urlsplit(raw_path)
    settings = services.runs.settings
    if len(body) > API_MAX_BODY_BYTES:
        return _detail(413, "Request body exceeds 1 MiB.")
    try:
        tenant = authenticate(headers.get("x-api-key"), settings, services.runs.store)
        if method == "GET":
            match = _JOIN.match(split.path)
            if match is None:
                return _detail(404, f"No route for {split.path}.")
            thread_id, run_id = (unquote(v, errors="replace") for v in match.groups())
            query = parse_qs(split.query)
            modes = _query_modes(query.get("stream_mode", []))
            cancel = _query_flag(query.get("cancel_on_disconnect", []))
            run = services.runs.get(tenant, thread_id, run_id)
            last = headers.get("last-event-id") or None
            return _stream(services, tenant, run, modes, last, cancel=cancel)
        create = RunCreate.model_validate_json(body or b"{}")
        create = create.model_copy(
            update={"stream_mode": create.stream_mode or list(DEFAULT_MODES)}
        )
        match = _CREATE.match(split.path)
        if match is not None:
            thread_id = unquote(match["thread_id"], errors="replace")
        else:
            meta = ThreadCreate(metadata={"stateless": True})
            thread_id = services.threads.create(tenant, meta).thread_id
        run = services.runs.create(tenant, thread_id, create)
        return _stream(services, tenant, run, None, None, cancel=create.on_disconnect == "cancel")
    except ValidationError as exc:
        errors = [
            {"loc": ["body", *e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return _detail(422, errors)
    except ValueError as exc:
        return _detail(422, str(exc))
    except LambdagraphError as exc:
        return _detail(exc.status_code, str(exc))
    except InfrastructureError:
        return _detail(503, "Temporarily unavailable; retry shortly.")


def _query_modes(values: list[str]) -> list[str] | None:
    """``stream_mode`` query values: repeated (httpx) or one JSON list (the official server)."""
    modes: list[str] = []
    for value in values:
        parsed: Any = value
        if value.startswith("["):
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                parsed = value
        modes += normalise(parsed) or []
    return modes or None


def _query_flag(values: list[str]) -> bool:
    """A boolean query parameter as the official server reads ``cancel_on_disconnect``."""
    return bool(values) and values[-1].strip().lower() in {"true", "yes", "1"}


def _canceller(services: StreamServices, tenant: str, run: Any) -> Callable[[], None]:
    def cancel() -> None:
        # What ``POST /threads/{tid}/runs/{rid}/cancel`` does, with its default action.
        try:
            services.runs.cancel(tenant, run.thread_id, run.run_id, action="interrupt", wait=False)
        except NotFoundError:
            return  # it ended meanwhile
        except (LambdagraphError, InfrastructureError):
            logger.exception("cancelling a disconnected stream's run failed")
            return
        logger.info(
            "stream client disconnected: run cancelled (on_disconnect=cancel)",
            extra={"run_id": run.run_id, "thread_id": run.thread_id},
        )

    return cancel


def _stream(
    services: StreamServices,
    tenant: str,
    run: Any,
    modes: list[str] | None,
    last: str | None,
    *,
    cancel: bool,
) -> Answer:
    settings = services.runs.settings
    tail = StreamTail(
        services.runs,
        services.log,
        run,
        modes=modes,
        last_event_id=last,  # a malformed one raises ValueError: 422
        max_s=settings.stream_max_s,
        poll_s=settings.stream_poll_s,
        heartbeat_s=settings.stream_heartbeat_s,
    )
    base = f"/threads/{quote(run.thread_id, safe='')}/runs/{run.run_id}"
    # The SDK reconnects to Location after a cut stream (stream_max_s): a client that asked
    # for cancel keeps asking for it there.
    location = f"{base}/stream" + ("?cancel_on_disconnect=true" if cancel else "")
    headers = [
        ("Content-Type", "text/event-stream; charset=utf-8"),
        ("Cache-Control", "no-store"),
        ("X-Accel-Buffering", "no"),
        ("Location", location),
        ("Content-Location", base),
    ]
    on_disconnect = _canceller(services, tenant, run) if cancel else None
    return Answer(200, headers, iter(tail), on_disconnect)


def client_gone(connection: Any) -> bool:
    """Whether the peer of ``connection`` (a socket) has closed it: readable with nothing to
    read. An SSE client sends nothing after its request, so readable means gone."""
    try:
        readable, _, _ = select.select([connection], [], [], 0)
        if not readable:
            return False
        return connection.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def write_chunked(handler: Any, result: Answer, *, head_only: bool = False) -> None:
    """Write ``result`` on a ``BaseHTTPRequestHandler``, each chunk as soon as it is made.

    A client gone away ends the stream: seen at an empty chunk (the tail yields one each
    pass, so within a poll interval) or at a failed write. Then ``result.on_disconnect`` is
    called (the run is cancelled: ``on_disconnect: "cancel"``); without it the run goes on.
    The stream ending by itself (the run ended, ``stream_max_s``) is no disconnect.
    """
    handler.send_response(result.status)
    for name, value in result.headers:
        handler.send_header(name, value)
    chunked = not any(name.lower() == "content-length" for name, _ in result.headers)
    if chunked:
        handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    if head_only:
        return
    gone = False
    try:
        for chunk in result.body:
            if not chunk:
                if client_gone(handler.connection):
                    gone = True
                    break
                continue
            if chunked:
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            else:
                handler.wfile.write(chunk)
            handler.wfile.flush()
        if chunked:
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
    except (BrokenPipeError, ConnectionResetError):
        gone = True
    except Exception:
        # AWS failed mid-stream: end it cleanly; the SDK sees the run active and reconnects.
        logger.exception("stream failed; closing it for the client to reconnect")
        handler.close_connection = True
        if chunked:
            handler.wfile.write(b"0\r\n\r\n")
    finally:
        close = getattr(result.body, "close", None)
        if callable(close):
            close()
    if gone:
        handler.close_connection = True
        if result.on_disconnect is not None:
            result.on_disconnect()
