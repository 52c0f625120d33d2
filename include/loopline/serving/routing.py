"""Sticky, hash-based traffic assignment between champion and canary.

An entity's bucket is a fixed number in [0, 1) derived from its id; it goes to the
canary when its bucket is below the canary weight. So an applicant sees the same
model within a step, and, because weights only grow during a rollout, an applicant
moved to the canary at 5% stays there at 20% and 50%: nobody flips back and forth.
The same mechanism, with a fixed weight, is an A/B assignment.
"""

from __future__ import annotations

import hashlib

from loopline.core.serving_state import Route


def bucket(entity_id: str, salt: str) -> float:
    digest = hashlib.sha256(f"{salt}\x1f{entity_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def choose_version(route: Route, entity_id: str) -> tuple[str, str]:
    """(version, arm) for this entity under this route; arm is 'champion' or 'canary'."""
    if route.champion_version is None:
        raise LookupError(f"model {route.model} has no champion to serve")
    if route.canary_version and bucket(entity_id, route.model) < route.canary_weight:
        return route.canary_version, "canary"
    return route.champion_version, "champion"
