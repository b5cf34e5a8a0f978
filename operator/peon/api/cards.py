"""What Peon's web page shows (pure): a server's card from its GameServer, its backups and
the session's end for Start and Extend. `server.py` serves them
at /page/*; the page (api/page/) puts every value in as text."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any, Iterable, Mapping

from peon.shared import actions, backup as bk, clock
from peon.shared.actions import BadRequest
from . import keys, views

MAX_HOURS = 24 * 7  # a session asked for on the page: at most a week
LOG_LINES = 100     # a log tail's lines by default
MAX_LOG_LINES = 2000
MAX_LOG_BYTES = 256 * 1024  # of a log tail, whatever its lines


def age_seconds(when: str | None, now: dt.datetime) -> int | None:
    t = clock.parse(when)
    return max(0, int((now - t).total_seconds())) if t else None


def card(gs: Mapping[str, Any], now: dt.datetime, friend: keys.Friend | None) -> dict[str, Any]:
    """One server as the page shows it, with what this key may do to it."""
    status = gs.get("status") or {}
    players = status.get("players") or {}
    stop = actions.scheduled_stop(gs, now)
    last_backup = (status.get("backup") or {}).get("lastSuccessfulTime")
    role = friend.role if friend else keys.ADMIN
    may = lambda r: keys.ROLES.index(role) >= keys.ROLES.index(r)  # noqa: E731
    phase = status.get("phase") or "Unknown"
    running = phase in ("Running", "Starting", "Pending")
    return {
        "name": gs["metadata"]["name"], "uid": views.uid_of(gs), "game": gs["spec"]["gameUid"],
        "title": (gs.get("spec") or {}).get("serverName") or gs["metadata"]["name"],
        "description": views.description_of(gs),
        "phase": phase, "state": views.server_object(gs, now)["server_state"],
        "why": (status.get("uptime") or {}).get("message") or "",
        "address": status.get("endpoint") or "",
        "players": players.get("online"), "max_players": players.get("max"),
        "stop_at": clock.iso(stop) if stop else None,
        "seconds_left": max(0, int((stop - now).total_seconds())) if stop else None,
        "last_backup": last_backup, "backup_age_seconds": age_seconds(last_backup, now),
        "can": {"start": may(keys.PLAYER) and not running, "extend": may(keys.PLAYER) and running,
                "stop": may(keys.PLAYER) and running, "backup": may(keys.ADMIN),
                "restore": may(keys.ADMIN), "logs": may(keys.ADMIN), "download": may(keys.ADMIN)},
    }


def board(servers: Iterable[Mapping[str, Any]], now: dt.datetime,
          friend: keys.Friend | None) -> dict[str, Any]:
    """The page's one poll: who the key is, and its servers' cards. Times to the second only
    change the body when the state does not: seconds_left and ages are computed by the page
    from stop_at and last_backup, so an idle board's ETag stays the same."""
    cards = [card(g, now, friend) for g in servers]
    for c in cards:
        c.pop("seconds_left"), c.pop("backup_age_seconds")
    return {"friend": {"name": friend.name if friend else "admin",
                       "role": friend.role if friend else keys.ADMIN},
            "servers": cards}


def etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def backups(runs: Iterable[Mapping[str, Any]], server: str) -> list[dict[str, Any]]:
    """A server's backups, newest first: what a friend needs to choose one."""
    mine = [b for b in runs if (b.get("spec") or {}).get("gameServer") == server]
    out = []
    for b in sorted(mine, key=bk.finished_at, reverse=True):
        st = b.get("status") or {}
        out.append({"name": b["metadata"]["name"], "phase": st.get("phase") or "Pending",
                    "reason": (b.get("spec") or {}).get("reason") or "",
                    "finished": st.get("completionTime"), "size": st.get("size"),
                    "offsite": bool(st.get("snapshot")), "message": st.get("message") or ""})
    return out


def hours(body: Mapping[str, Any]) -> float:
    """The `hours` of a Start or Extend: a number from 0.25 to a week."""
    h = body.get("hours", 2)
    if isinstance(h, bool) or not isinstance(h, (int, float, str)):
        raise BadRequest("hours: a number of hours is required")
    try:
        value = float(h)
    except ValueError:
        raise BadRequest(f"hours: {str(h)[:20]!r} is not a number") from None
    if not 0.25 <= value <= MAX_HOURS:
        raise BadRequest(f"hours: from 0.25 to {MAX_HOURS}")
    return value


def extended_stop(gs: Mapping[str, Any], now: dt.datetime, more: dt.timedelta) -> dt.datetime:
    """Extend: `more` after the session's end as it stands (or after now, with none)."""
    stop = actions.scheduled_stop(gs, now)
    return max(stop or now, now) + more


def log_lines(query: Mapping[str, str]) -> int:
    raw = query.get("lines", str(LOG_LINES))
    if not raw.isdigit() or not 1 <= int(raw[:6]) <= MAX_LOG_LINES:
        raise BadRequest(f"lines: a number from 1 to {MAX_LOG_LINES}")
    return int(raw)


