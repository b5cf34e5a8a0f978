"""What a person asks of a server from outside Git (the PEON API, `kubectl peon`), as writes that
never touch a GameServer's spec: start, stop and restart are annotations the operator reads
(`peon.dev/wake`, `peon.dev/sleep`, `peon.dev/restartedAt`), so a server whose spec lives in
Git keeps its spec and generation and Argo CD or Flux see no drift. Backups and restores are
objects of their own. Pure builders and parsers here; the callers send them.
"""
from __future__ import annotations

import datetime as dt
import re
import secrets
from typing import Any, Iterable, Mapping

from peon import ANNOTATION_RESTARTED_AT, ANNOTATION_SLEEP, ANNOTATION_WAKE, API_VERSION, LABEL_GAMESERVER
from . import backup as bk, clock

INTERVAL = re.compile(r"^\s*(\d+)\s*([dhms]?)\s*$", re.I)
UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds", "": "minutes"}
EPOCH = re.compile(r"^\d{10}$")
MAX_INTERVAL = dt.timedelta(days=366)


class BadRequest(ValueError):
    """A request that cannot be carried out as asked; the message says which field and why."""


def parse_interval(text: Any) -> dt.timedelta:
    """PEON's interval: a number and a unit (d, h, m, s); a bare number is minutes."""
    m = INTERVAL.match(str(text)) if isinstance(text, (str, int)) and not isinstance(text, bool) else None
    if not m:
        raise BadRequest(f"interval: {text!r} is not a duration such as 5h, 20m, 2d or 90")
    span = dt.timedelta(**{UNITS[m.group(2).lower()]: int(m.group(1))})
    if not dt.timedelta(0) < span <= MAX_INTERVAL:
        raise BadRequest(f"interval: {text!r} must be more than 0 and at most 366 days")
    return span


def parse_epoch(text: Any, now: dt.datetime) -> dt.datetime:
    """PEON's epoch_time: ten digits of Unix seconds, in the future."""
    if isinstance(text, bool) or not EPOCH.match(str(text)):
        raise BadRequest(f"epoch_time: {text!r} is not ten digits of Unix time")
    at = dt.datetime.fromtimestamp(int(str(text)), dt.timezone.utc)
    if at <= now:
        raise BadRequest(f"epoch_time: {text} ({clock.iso(at)}) is not in the future")
    return at


def stop_time(body: Mapping[str, Any], now: dt.datetime) -> dt.datetime | None:
    """When a start's session should end (or when a stop should happen), from PEON's body."""
    if body.get("interval") not in (None, ""):
        return now + parse_interval(body["interval"])
    if body.get("epoch_time") not in (None, ""):
        return parse_epoch(body["epoch_time"], now)
    return None


def _annotations(values: Mapping[str, str | None]) -> dict[str, Any]:
    return {"metadata": {"annotations": dict(values)}}


def start_patch(now: dt.datetime, stop_at: dt.datetime | None = None) -> dict[str, Any]:
    """A wake-up now; with `stop_at`, the session ends then (else no stop is pending)."""
    return _annotations({ANNOTATION_WAKE: clock.iso(now), ANNOTATION_SLEEP: clock.iso(stop_at)})


def stop_patch(at: dt.datetime, now: dt.datetime | None = None) -> dict[str, Any]:
    """A stop asked for at `at` (now, or later: a scheduled stop). A stop now also takes the
    wake-up away: a start and a stop in the same second must not cancel each other."""
    values = {ANNOTATION_SLEEP: clock.iso(at)}
    if now is None or at <= now:
        values[ANNOTATION_WAKE] = None
    return _annotations(values)


def restart_patch(now: dt.datetime) -> dict[str, Any]:
    """A new pod for the server (the annotation is copied into its pod template)."""
    return _annotations({ANNOTATION_RESTARTED_AT: clock.iso(now)})


def update_patch(now: dt.datetime) -> dict[str, Any]:
    """An update: a new pod that pulls its image again (issue 28), when the server's maintenance
    rules let it restart; metadata only, as a restart."""
    from .maintenance import ANNOTATION_UPDATE
    return _annotations({ANNOTATION_UPDATE: clock.iso(now)})


def manual_backup(gs: Mapping[str, Any], now: dt.datetime, labels: Mapping[str, str] | None = None
                  ) -> dict[str, Any]:
    name = bk.fit(f"{gs['metadata']['name']}-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}")
    return bk.backup_object(gs, name, bk.MANUAL, labels)


def restore_object(gs: Mapping[str, Any], backup_name: str, now: dt.datetime) -> dict[str, Any]:
    meta = gs["metadata"]
    return {"apiVersion": API_VERSION, "kind": "GameServerRestore",
            "metadata": {"name": bk.fit(f"{meta['name']}-restore-{now:%Y%m%d-%H%M%S}"),
                         "namespace": meta["namespace"], "labels": {LABEL_GAMESERVER: meta["name"]}},
            "spec": {"gameServer": meta["name"], "backup": backup_name}}


def newest_good_backup(backups: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The most recent Succeeded backup (by completion time), or None."""
    good = [b for b in backups if (b.get("status") or {}).get("phase") == bk.SUCCEEDED]
    return max(good, key=lambda b: bk.finished_at(b), default=None)


def scheduled_stop(gs: Mapping[str, Any], now: dt.datetime) -> dt.datetime | None:
    """When the server will stop on its own: a stop asked for, else the end of its session as
    the operator last decided it (status.uptime.nextChange while it runs a limited session)."""
    asked = clock.parse((gs["metadata"].get("annotations") or {}).get(ANNOTATION_SLEEP))
    woke = clock.parse((gs["metadata"].get("annotations") or {}).get(ANNOTATION_WAKE))
    if asked and asked > now and not (woke and woke > asked):
        return asked
    up = (gs.get("status") or {}).get("uptime") or {}
    nxt = clock.parse(up.get("nextChange"))
    # With an idle rule the next change is only the next look at the player count.
    idle = ((gs.get("spec") or {}).get("uptime") or {}).get("idle")
    if up.get("running") and nxt and nxt > now and up.get("reason") != "AlwaysOn" and not idle:
        return nxt
    return None
