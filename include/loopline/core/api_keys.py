"""API keys as configured: ``LOOPLINE_API_KEYS`` read and checked, and new keys made.

``LOOPLINE_API_KEYS`` lists ``<client>:sha256:<hex digest of the key>`` entries (comma
separated); ``loopline api-key <client>`` makes a new key and prints its entry. Only the
hash is ever stored. The settings read the value here (a bad entry is a settings error,
named by position, never showing a key); the prediction service checks presented keys
against it (``loopline.serving.auth``).
"""

from __future__ import annotations

import hashlib
import re
import secrets

from loopline.core.errors import LooplineError

CLIENT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DIGEST = re.compile(r"[0-9a-f]{64}")


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
