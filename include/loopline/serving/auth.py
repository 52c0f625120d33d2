"""API keys of the prediction service: one per client, stored as SHA-256 hashes, compared in constant time.

The keys are ``LOOPLINE_API_KEYS``, read by the settings (``loopline.core.api_keys``:
``<client>:sha256:<hex digest of the key>`` entries; ``loopline api-key <client>`` makes one). A
request presents its key as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``;
the service answers 401 without a valid one, and logs the client's name (never the
key) with each prediction. With no keys configured the service is open: the embedded
default, which listens on 127.0.0.1 only. ``LOOPLINE_REQUIRE_API_KEYS=true`` (the
full stack) refuses to start without keys instead.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

OPEN_CLIENT = "anonymous"  # the client name logged when the service runs without keys
CLIENT_FIELD = "loopline_client"  # the request-row key the edge guard writes the client's name into


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
