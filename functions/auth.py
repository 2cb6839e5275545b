"""API keys (``x-api-key``): each key is a tenant.

Keys come from ``LAMBDAGRAPH_API_KEYS`` (comma-separated) and, when
``LAMBDAGRAPH_API_KEYS_IN_TABLE`` is true (the AWS deployment), from ``APIKEY#<sha256>`` items
in the runtime table. Only hashes are compared or stored. No keys configured at all = auth
off: every request is the ``public`` tenant (the local stack warns about it at start-up).
"""

from __future__ import annotations

import hashlib
import hmac
import time

from functions.errors import UnauthorizedError
from functions.settings import Settings
from functions.store import Store

PUBLIC_TENANT = "public"
# Table lookups are cached per warm Lambda container to keep the key check off the hot path.
_CACHE_TTL_S = 60.0
_cache: dict[str, tuple[str | None, float]] = {}


def key_hash(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def tenant_of(key_digest: str) -> str:
    # The tenant id is derived from the key, never the key itself, so logs and records are safe.
    return key_digest[:24]


def auth_enabled(settings: Settings) -> bool:
    return bool(settings.api_keys.strip()) or settings.api_keys_in_table


def authenticate(api_key: str | None, settings: Settings, store: Store | None) -> str:
    """The tenant of ``api_key``; UnauthorizedError if it is missing or unknown."""
    if not auth_enabled(settings):
        return PUBLIC_TENANT
    if not api_key:
        raise UnauthorizedError("Missing API key: send it in the x-api-key header.")
    digest = key_hash(api_key)
    for configured in (k.strip() for k in settings.api_keys.split(",")):
        if configured and hmac.compare_digest(key_hash(configured), digest):
            return tenant_of(digest)
    if settings.api_keys_in_table and store is not None:
        tenant = _table_lookup(digest, store)
        if tenant is not None:
            return tenant
    raise UnauthorizedError("Unknown API key.")


def _table_lookup(digest: str, store: Store) -> str | None:
    cached = _cache.get(digest)
    now = time.monotonic()
    if cached is not None and cached[1] > now:
        return cached[0]
    tenant = store.tenant_for_key_hash(digest)
    _cache[digest] = (tenant, now + _CACHE_TTL_S)
    return tenant
