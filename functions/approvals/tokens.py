"""The reviewer's link token: ``v1.<payload>.<mac>``, HMAC-SHA256 over ``v1.<payload>``.

The payload (base64url JSON) names the approval, the reviewer and the expiry (epoch
seconds), so a token is bound to all three and nothing about it needs storing: verifying
needs only the key. Tokens are secrets: never log them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

from functions.errors import LambdagraphError

VERSION = "v1"


class TokenInvalid(LambdagraphError):
    status_code = 403


class TokenExpired(LambdagraphError):
    status_code = 410


@dataclass(frozen=True)
class TokenClaims:
    approval_id: str
    reviewer: str
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, signed: str) -> str:
    return _b64(hmac.new(key, signed.encode(), hashlib.sha256).digest())


def sign(key: bytes, approval_id: str, reviewer: str, expires_at: int) -> str:
    payload = _b64(
        json.dumps(
            {"a": approval_id, "r": reviewer, "x": expires_at}, separators=(",", ":")
        ).encode()
    )
    signed = f"{VERSION}.{payload}"
    return f"{signed}.{_mac(key, signed)}"


def verify(key: bytes, token: str | None, approval_id: str, now: float) -> TokenClaims:
    """The token's claims; TokenInvalid (403) if forged, tampered or for another approval,
    TokenExpired (410) once the request expired."""
    if not token:
        raise TokenInvalid("This link has no token; open the link from the email as it was sent.")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != VERSION:
        raise TokenInvalid("This link's token is malformed; open the link from the email.")
    signed = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(_mac(key, signed), parts[2]):
        raise TokenInvalid("This link's token is not valid (it was altered or not issued here).")
    try:
        claims = json.loads(_unb64(parts[1]))
        result = TokenClaims(str(claims["a"]), str(claims["r"]), int(claims["x"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise TokenInvalid("This link's token is malformed; open the link from the email.") from exc
    if not hmac.compare_digest(result.approval_id, approval_id):
        raise TokenInvalid("This link's token belongs to another approval request.")
    if now >= result.expires_at:
        raise TokenExpired("This approval request has expired; the run was resumed without it.")
    return result
