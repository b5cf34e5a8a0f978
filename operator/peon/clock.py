"""The operator's idea of now. Tests control time by pointing PEON_CLOCK_FILE at a file that
holds an ISO timestamp; the operator then also re-checks timed work every second."""
from __future__ import annotations

import datetime as dt
import os


def now() -> dt.datetime:
    path = os.environ.get("PEON_CLOCK_FILE")
    if path:
        try:
            with open(path) as f:
                return dt.datetime.fromisoformat(f.read().strip().replace("Z", "+00:00"))
        except (OSError, ValueError):
            pass
    return dt.datetime.now(dt.timezone.utc)


def requeue_cap() -> float:
    """The longest a timed re-check may wait: a controlled clock can jump."""
    return 1.0 if os.environ.get("PEON_CLOCK_FILE") else 300.0
