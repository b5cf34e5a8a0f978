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


def iso(t: dt.datetime | None) -> str | None:
    """A time as the API writes it (RFC 3339, UTC, whole seconds); None stays None."""
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if t else None


def parse(text: str | None) -> dt.datetime | None:
    """An RFC 3339 time (a naive one is UTC); None or garbage gives None."""
    if not text:
        return None
    try:
        t = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def requeue_cap() -> float:
    """The longest a timed re-check may wait: a controlled clock can jump."""
    return 1.0 if os.environ.get("PEON_CLOCK_FILE") else 300.0
