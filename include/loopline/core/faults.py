"""Named crash points, so tests can kill a real process at an exact step and prove recovery.

``LOOPLINE_CRASH_AT=<point>`` makes the process exit at once (no clean-up, no ``finally``,
as a ``kill -9`` or a lost machine would) when it reaches that point. Unset, a crash point
is one dictionary look-up. Points are named after the step that has just finished.
"""

from __future__ import annotations

import os

CRASH_EXIT_CODE = 86


def crash_point(name: str) -> None:
    if os.environ.get("LOOPLINE_CRASH_AT") == name:
        os._exit(CRASH_EXIT_CODE)
