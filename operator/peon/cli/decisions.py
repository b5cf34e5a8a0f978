"""What `kubectl peon` decides before it acts: when, whether a start can run, how a run ended,
which pod is the server's. Pure."""
from __future__ import annotations

import datetime as dt
from typing import Any, Mapping

from peon.shared import backup as bk, clock

from .text import one_line


def parse_when(text: str, now: dt.datetime) -> dt.datetime:
    """A point in time: PEON's ten-digit Unix time, or an RFC 3339 time; in the future."""
    from peon.shared import actions
    if actions.EPOCH.match(str(text)):
        return actions.parse_epoch(text, now)
    at = clock.parse(text)
    if at is None:
        raise actions.BadRequest(f"{text!r} is neither ten digits of Unix time nor an RFC 3339 "
                                 "time such as 2026-11-29T23:00:00Z")
    if at <= now:
        raise actions.BadRequest(f"{text} ({clock.iso(at)}) is not in the future")
    return at


def start_refusal(gs: Mapping[str, Any]) -> str | None:
    """Why a start cannot run the server, or None. spec.state Stopped wins over any wake-up,
    and kubectl peon never writes spec."""
    if (gs.get("spec") or {}).get("state") == "Stopped":
        name = gs["metadata"]["name"]
        return (f"gameserver/{name} has spec.state: Stopped, which wins over a start: it will not "
                f"run until its spec says Running (kubectl peon never writes spec; change it "
                f"where the spec lives, e.g. in Git, or `kubectl patch pgs {name} --type merge "
                "-p '{\"spec\":{\"state\":\"Running\"}}'`)")
    return None


def run_outcome(obj: Mapping[str, Any] | None) -> tuple[bool, bool, str]:
    """(finished, succeeded, what it said) for a GameServerBackup or GameServerRestore."""
    st = (obj or {}).get("status") or {}
    phase = st.get("phase")
    return phase in bk.FINISHED, phase == bk.SUCCEEDED, one_line(st.get("message"))


