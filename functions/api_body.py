"""Request bodies checked before routing: what a client sends must never become a 5xx.

Powertools parses the body itself, but it raises plain Python errors (a 500 here) on bytes
that are not UTF-8, on JSON nested deeper than the interpreter's recursion limit, and on
content types it does not know; it also accepts ``NaN``/``Infinity``, which we would store
and then answer as invalid JSON. ``prepare_body`` turns every such body into a 422 with
``{"detail": [...]}`` and hands Powertools a body it can parse.

Bodies are JSON whatever the ``Content-Type`` says (as the official LangGraph server reads
them): ``curl -d`` sends ``application/x-www-form-urlencoded`` by default, and a form parse
would silently drop every field.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

# Deeper than any LangGraph input or metadata needs, shallow enough that recursive code
# (pydantic, our JSON shaping, the checkpointer's serializer) never hits the recursion limit.
MAX_JSON_DEPTH = 64


class BodyError(ValueError):
    """A request body the API cannot accept; ``errors`` are pydantic-shaped details."""

    def __init__(self, msg: str, error_type: str) -> None:
        super().__init__(msg)
        self.errors = [{"loc": ["body"], "msg": msg, "type": error_type}]


def _reject_constant(name: str) -> Any:
    raise BodyError(f"{name} is not a JSON number; send a finite number.", "json_invalid")


def _check_tree(value: Any) -> None:
    """Depth, finite numbers and valid Unicode everywhere, without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > MAX_JSON_DEPTH:
                raise BodyError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels.", "json_depth")
            for key, child in item.items():
                _check_text(key)
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            if depth > MAX_JSON_DEPTH:
                raise BodyError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels.", "json_depth")
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, float) and not math.isfinite(item):
            # 1e999 parses to inf without going through parse_constant.
            raise BodyError("Number out of range; send a finite number.", "json_invalid")
        elif isinstance(item, str):
            _check_text(item)


def _check_text(text: str) -> None:
    # "\ud800" is valid JSON but not Unicode: it cannot be stored (DynamoDB wants UTF-8).
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BodyError("Strings must be valid Unicode (no lone surrogates).", "unicode") from exc


def parse_json(text: str) -> Any:
    """The JSON document in ``text``; BodyError if it is not one the API accepts."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except BodyError:
        raise
    except RecursionError as exc:
        raise BodyError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels.", "json_depth") from exc
    except ValueError as exc:
        # JSONDecodeError, and integers longer than Python's int/str digit limit.
        raise BodyError(f"Malformed JSON: {exc}", "json_invalid") from exc
    _check_tree(value)
    return value


def body_text(event: dict[str, Any]) -> str | None:
    """The body as text (base64 undone); BodyError if it is not UTF-8."""
    body = event.get("body")
    if body is None or body == "":
        return None
    if not event.get("isBase64Encoded"):
        return str(body)
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BodyError("Body is flagged base64 but is not base64.", "body_encoding") from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError("Body is not valid UTF-8.", "body_encoding") from exc


def prepare_body(event: dict[str, Any]) -> dict[str, Any]:
    """The event with a checked, plain-text JSON body; BodyError if the body is unacceptable."""
    # No route reads the body of a GET or DELETE: it is dropped, not judged.
    reads_body = str(event.get("httpMethod") or "").upper() in ("POST", "PUT", "PATCH")
    text = body_text(event) if reads_body else None
    if text is not None and not text.strip():
        text = None
    if text is not None:
        parse_json(text)
    headers = {k: v for k, v in (event.get("headers") or {}).items() if k.lower() != "content-type"}
    multi = {
        k: v
        for k, v in (event.get("multiValueHeaders") or {}).items()
        if k.lower() != "content-type"
    }
    headers["content-type"] = "application/json"
    multi["content-type"] = ["application/json"]
    return {
        **event,
        "body": text,
        "isBase64Encoded": False,
        "headers": headers,
        "multiValueHeaders": multi,
    }
