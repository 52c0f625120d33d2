"""API keys of the prediction service: one per client, stored as SHA-256 hashes, compared in constant time.

``LOOPLINE_API_KEYS`` lists ``<client>:sha256:<hex digest of the key>`` entries (comma
separated); ``loopline api-key <client>`` makes a new key and prints its entry. A
request presents its key as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``;
the service answers 401 without a valid one, and logs the client's name (never the
key) with each prediction. With no keys configured the service is open: the embedded
default, which listens on 127.0.0.1 only. ``LOOPLINE_REQUIRE_API_KEYS=true`` (the
full stack) refuses to start without keys instead.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence

from loopline.core.errors import LooplineError

CLIENT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
OPEN_CLIENT = "anonymous"  # the client name logged when the service runs without keys
CLIENT_FIELD = "loopline_client"  # the request-row key the edge guard writes the client's name into


class ApiKeyError(LooplineError, ValueError):
    """LOOPLINE_API_KEYS cannot be read; the message names the entry (never a key)."""


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key(client: str) -> tuple[str, str]:
    """A fresh random key for ``client`` and its LOOPLINE_API_KEYS entry (only the hash is stored)."""
    if not CLIENT_PATTERN.fullmatch(client):
        raise ApiKeyError(f"client name {client!r}: use letters, digits, '.', '_' or '-' (up to 64)")
    key = secrets.token_urlsafe(32)
    return key, f"{client}:sha256:{digest(key)}"


def parse_keys(raw: str) -> tuple[tuple[str, str], ...]:
    """``(client, sha256 hex)`` pairs from LOOPLINE_API_KEYS; ApiKeyError names a bad entry by position."""
    pairs: list[tuple[str, str]] = []
    for n, entry in enumerate((e.strip() for e in raw.split(",")), start=1):
        if not entry:
            continue
        client, _, rest = entry.partition(":")
        scheme, _, hexdigest = rest.partition(":")
        if not CLIENT_PATTERN.fullmatch(client):
            raise ApiKeyError(f"LOOPLINE_API_KEYS entry {n}: the client name must be letters, digits, '.', '_', '-'")
        if scheme != "sha256" or not _DIGEST.fullmatch(hexdigest.lower()):
            raise ApiKeyError(
                f"LOOPLINE_API_KEYS entry {n} ({client}): expected {client}:sha256:<64 hex digits>, the hash of "
                "the key, not the key itself; `loopline api-key <client>` prints a new key and its entry"
            )
        if any(c == client for c, _ in pairs):
            raise ApiKeyError(f"LOOPLINE_API_KEYS lists client {client!r} twice")
        pairs.append((client, hexdigest.lower()))
    return tuple(pairs)


class ApiKeys:
    """Which client a presented key belongs to."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self.pairs = tuple((client, bytes.fromhex(h)) for client, h in pairs)

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def client_of(self, key: str) -> str | None:
        """The client whose key this is, else None; every stored hash is compared, in constant time each."""
        presented = hashlib.sha256(key.encode("utf-8")).digest()
        found = None
        for client, stored in self.pairs:
            if hmac.compare_digest(presented, stored):
                found = client
        return found


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request presents: ``Authorization: Bearer <key>``, else ``X-API-Key``."""
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    return None
