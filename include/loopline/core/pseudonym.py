"""Pseudonymisation: what logs, outcomes and validation reports store instead of an entity id.

One keyed hash for the whole line (the secret is ``LOOPLINE_PSEUDONYM_SECRET``), so a prediction log,
its delayed labels and a data report join on the same pseudonym, and none of them can be read back
to the id without the secret. Stations (ingestion, serving) and what steers them (monitoring) share it.
"""

from __future__ import annotations

import hashlib


def pseudonym(entity_id: str, secret: str) -> str:
    """What logs store instead of the entity id: stable for joins, useless without the secret."""
    return hashlib.blake2b(entity_id.encode(), key=secret.encode()[:64], digest_size=16).hexdigest()
