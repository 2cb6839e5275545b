"""Webhook URLs: checked when a run is created and again before every delivery.

On AWS a URL must be ``https`` and every address its host resolves to must be public: no
loopback, private, link-local (169.254.169.254, the instance metadata), multicast, reserved
or otherwise non-global address (SSRF). The local stack allows ``http`` and private targets
(``LAMBDAGRAPH_WEBHOOK_ALLOW_PRIVATE=false`` restores the check). DNS can change between the
check at creation and a delivery, so the sender checks again and connects to the address it
checked (``WebhookTarget.address``).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from functions.errors import InvalidRequestError
from functions.settings import Settings

MAX_URL_LENGTH = 2048


@dataclass(frozen=True)
class WebhookTarget:
    url: str
    host: str
    port: int
    # The checked address the delivery connects to (None: not resolved, e.g. at creation
    # when resolution is left to delivery).
    address: str | None


def _refused(url: str, why: str) -> InvalidRequestError:
    return InvalidRequestError(f"webhook {url!r} refused: {why}")


def check_webhook_url(url: str, settings: Settings, *, resolve: bool = True) -> WebhookTarget:
    """The target of ``url``; InvalidRequestError (422) saying why it is refused."""
    if len(url) > MAX_URL_LENGTH:
        raise _refused(url[:80] + "...", f"longer than {MAX_URL_LENGTH} characters")
    parts = urlsplit(url)
    allowed = ("https",) if settings.webhook_require_https else ("http", "https")
    if parts.scheme not in allowed:
        raise _refused(url, f"the scheme must be {' or '.join(allowed)}")
    if not parts.hostname:
        raise _refused(url, "no host")
    if parts.username or parts.password:
        raise _refused(url, "credentials in the URL are not allowed (they would be logged)")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise _refused(url, "invalid port") from exc
    host = parts.hostname
    if not resolve:
        return WebhookTarget(url, host, port, None)
    address = _checked_address(url, host, port, allow_private=settings.webhook_allow_private)
    return WebhookTarget(url, host, port, address)


# The resolver (tests stand a DNS in for it: a name only it knows proves the sender connects
# to the address that was checked, not to a fresh lookup).
getaddrinfo = socket.getaddrinfo


def _checked_address(url: str, host: str, port: int, *, allow_private: bool) -> str:
    try:
        infos = getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise _refused(url, f"host {host!r} does not resolve") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise _refused(url, f"host {host!r} does not resolve")
    if not allow_private:
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if not ip.is_global or ip.is_multicast:
                raise _refused(
                    url, f"{host!r} resolves to {address}, which is not a public address"
                )
    return addresses[0]
