"""What `kubectl peon`'s columns and `status` say of a server and its backups: pure."""
from __future__ import annotations

import datetime as dt
from typing import Any, Iterable, Mapping, Sequence

from peon.shared import backup as bk, clock

from .text import NONE, age, human_size, one_line, table, until

EVENTS_SHOWN = 10


def players(status: Mapping[str, Any]) -> str:
    p = status.get("players") or {}
    online, most = p.get("online"), p.get("max")
    if online is None:
        return NONE
    return f"{online}/{most}" if most is not None else str(online)


def why(status: Mapping[str, Any]) -> str:
    return (status.get("uptime") or {}).get("reason") or NONE


def backups_by_server(backups: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list]:
    out: dict[tuple[str, str], list] = {}
    for b in backups:
        server = (b.get("spec") or {}).get("gameServer")
        if server:
            out.setdefault((b["metadata"].get("namespace", ""), server), []).append(b)
    return out


def last_backup_time(gs: Mapping[str, Any], backups: Iterable[Mapping[str, Any]] | None
                     ) -> dt.datetime | None:
    """When the newest Succeeded GameServerBackup of this server finished. With no backups
    to look at (None: listing them was not allowed), what the server's status says."""
    from peon.shared import actions
    if backups is None:
        return clock.parse(((gs.get("status") or {}).get("backup") or {}).get("lastSuccessfulTime"))
    newest = actions.newest_good_backup(backups)
    return clock.parse(bk.finished_at(newest)[0]) if newest else None


LS_HEADERS = ("NAME", "GAME", "STATE", "PHASE", "ADDRESS", "PLAYERS", "WHY", "LAST-BACKUP", "AGE")


def ls_row(gs: Mapping[str, Any], backups: Iterable[Mapping[str, Any]] | None,
           now: dt.datetime) -> list[str]:
    """One `ls` line: the GameServer's own printer columns, plus its last good backup."""
    meta, spec, st = gs["metadata"], gs.get("spec") or {}, gs.get("status") or {}
    last = last_backup_time(gs, backups)
    return [meta["name"], spec.get("gameUid") or NONE, spec.get("state") or "Running",
            st.get("phase") or NONE, st.get("endpoint") or NONE, players(st), why(st),
            age(last, now) if last else NONE, age(meta.get("creationTimestamp"), now)]


def ls_table(servers: Sequence[Mapping[str, Any]], backups: Sequence[Mapping[str, Any]] | None,
             now: dt.datetime, all_namespaces: bool = False) -> str:
    by_server = backups_by_server(backups) if backups is not None else None
    rows = []
    for gs in sorted(servers, key=lambda g: (g["metadata"].get("namespace", ""), g["metadata"]["name"])):
        key = (gs["metadata"].get("namespace", ""), gs["metadata"]["name"])
        row = ls_row(gs, by_server.get(key, []) if by_server is not None else None, now)
        rows.append(([key[0]] if all_namespaces else []) + row)
    return table((("NAMESPACE",) if all_namespaces else ()) + LS_HEADERS, rows)


BACKUP_HEADERS = ("NAME", "SERVER", "REASON", "PHASE", "SIZE", "AGE")


def backups_table(backups: Sequence[Mapping[str, Any]], now: dt.datetime,
                  all_namespaces: bool = False) -> str:
    """Oldest first, as they were taken."""
    rows = []
    for b in sorted(backups, key=lambda b: (b["metadata"].get("namespace", ""),
                                            b["metadata"].get("creationTimestamp", ""),
                                            b["metadata"]["name"])):
        meta, spec, st = b["metadata"], b.get("spec") or {}, b.get("status") or {}
        row = [meta["name"], spec.get("gameServer") or NONE, spec.get("reason") or NONE,
               st.get("phase") or NONE, human_size(st.get("size")),
               age(meta.get("creationTimestamp"), now)]
        rows.append(([meta.get("namespace", "")] if all_namespaces else []) + row)
    return table((("NAMESPACE",) if all_namespaces else ()) + BACKUP_HEADERS, rows)


def event_time(e: Mapping[str, Any]) -> str:
    return (e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp")
            or (e.get("metadata") or {}).get("creationTimestamp") or "")


def events_of(events: Iterable[Mapping[str, Any]], gs: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The GameServer's Events (this object, not an earlier one of the same name), oldest
    first, the last EVENTS_SHOWN of them."""
    meta = gs["metadata"]
    mine = []
    for e in events:
        inv = e.get("involvedObject") or e.get("regarding") or {}
        if inv.get("kind") != "GameServer" or inv.get("name") != meta["name"]:
            continue
        if meta.get("uid") and inv.get("uid") and inv["uid"] != meta["uid"]:
            continue
        mine.append(e)
    mine.sort(key=lambda e: (clock.parse(event_time(e)) or dt.datetime.min.replace(tzinfo=dt.timezone.utc)))
    return mine[-EVENTS_SHOWN:]


def event_age(e: Mapping[str, Any], now: dt.datetime) -> str:
    """'3m', or as describe says a repeated one: '3m (x4 over 20m)'."""
    last = age(event_time(e), now)
    count = e.get("count") or (e.get("series") or {}).get("count") or 1
    first = e.get("firstTimestamp") or e.get("eventTime")
    if count > 1 and first:
        return f"{last} (x{count} over {age(first, now)})"
    return last


def maintenance_fields(m: Mapping[str, Any], now: dt.datetime) -> list[tuple[str, str]]:
    """What waits for an empty server and until when, whether players can be warned, and the
    next scheduled restart (status.maintenance, issue 28)."""
    out = []
    if m.get("pending"):
        out.append(("Waiting", one_line(m.get("message") or m["pending"])))
        deadline = clock.parse(m.get("deadline"))
        if deadline:
            out.append(("Applied by", until(deadline, now) + " at the latest"))
    if m.get("console"):
        out.append(("Warnings", one_line(m["console"])))
    nxt = clock.parse(m.get("nextRestart"))
    if nxt:
        out.append(("Next restart", until(nxt, now)))
    updated = clock.parse(m.get("updatedAt") or m.get("lastUpdate"))
    if updated:  # the last update of a moving tag (its image pulled again)
        out.append(("Updated", until(updated, now)))
    nxt = clock.parse(m.get("nextUpdate"))
    if nxt:
        out.append(("Next update", until(nxt, now)))
    return out


STATUS_LABEL_WIDTH = 15  # "Next change:" and its value, as describe lines them up


def recovery_fields(rec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """status.recovery (a server moved off a lost node) for people: what the move cost in play,
    and the claims left behind on the lost node (kept for a later look, never deleted)."""
    out = []
    if rec.get("claim"):
        out.append(("Recovered", rec.get("message") or
                    f"onto claim {rec['claim']} after node {rec.get('lostNode', '?')} was lost"))
    for i, c in enumerate(rec.get("leftBehind") or []):
        out.append(("Left behind" if i == 0 else "",
                    f"claim {c.get('claim', '?')} on node {c.get('node', '?')} (unused; "
                    f"replaced by {c.get('replacedBy', '?')}): delete it when it is no longer wanted"))
    return out


def status_text(gs: Mapping[str, Any], events: Iterable[Mapping[str, Any]], now: dt.datetime) -> str:
    """`status NAME`: what `kubectl describe` would say of it, in the words players care for."""
    from peon.shared import actions
    meta, spec, st = gs["metadata"], gs.get("spec") or {}, gs.get("status") or {}
    up = st.get("uptime") or {}
    fields: list[tuple[str, str]] = [
        ("Name", meta["name"]), ("Namespace", meta.get("namespace", "")),
        ("Game", spec.get("gameUid") or NONE), ("State", spec.get("state") or "Running"),
        ("Phase", st.get("phase") or NONE)]
    reason = up.get("reason")
    fields.append(("Why", f"{reason}: {one_line(up['message'])}" if reason and up.get("message")
                   else reason or NONE))
    stop = actions.scheduled_stop(gs, now)
    if stop:
        fields.append(("Stops", until(stop, now)))
    nxt = clock.parse(up.get("nextChange"))
    if nxt and nxt != stop:
        fields.append(("Next change", until(nxt, now)))
    fields.append(("Address", st.get("endpoint") or NONE))
    for i, ep in enumerate(st.get("endpoints") or []):
        fields.append(("Endpoints" if i == 0 else "",
                       f"{ep.get('name', '?')} {ep.get('address', '?')}:{ep.get('port', '?')}"
                       f"/{ep.get('protocol', '?')}"))
    pl = players(st)
    seen = (st.get("players") or {}).get("lastSeen")
    fields.append(("Players", pl + (f" (a player last seen {age(seen, now)} ago)" if seen else "")))
    fields += maintenance_fields(st.get("maintenance") or {}, now)
    last = st.get("backup") or {}
    if last.get("lastSuccessful"):
        fields.append(("Last backup", f"{last['lastSuccessful']}" + (
            f" ({age(last['lastSuccessfulTime'], now)} ago)" if last.get("lastSuccessfulTime") else "")))
    if last.get("lastOffsite"):  # the loss window: what a lost node would take with it
        fields.append(("Off-site", f"{last['lastOffsite']}" + (
            f" ({age(last['lastOffsiteTime'], now)} ago)" if last.get("lastOffsiteTime") else "")
            + ("; OVERDUE: older than the schedule promised" if last.get("offsiteOverdue") else "")))
    elif last.get("offsiteOverdue"):
        fields.append(("Off-site", "none yet; OVERDUE: the schedule promised one"))
    seed = st.get("seed") or {}
    if seed.get("snapshot"):  # a world that came back from the store, and how old it was
        taken, seeded = clock.parse(seed.get("snapshotTime")), clock.parse(seed.get("seededAt"))
        fields.append(("Seeded", f"from snapshot {seed['snapshot'][:8]}" + (
            f", taken {age(taken, seeded)} before it was seeded" if taken and seeded else "")))
    fields += recovery_fields(st.get("recovery") or {})
    if last.get("nextScheduleTime") and clock.parse(last["nextScheduleTime"]):
        fields.append(("Next backup", until(clock.parse(last["nextScheduleTime"]), now)))
    if st.get("image"):
        fields.append(("Image", st["image"]))
    fields.append(("Age", age(meta.get("creationTimestamp"), now)))
    observed, generation = st.get("observedGeneration"), meta.get("generation")
    if observed is not None and generation is not None and observed != generation:
        fields.append(("Note", f"this status is for generation {observed}; the spec is at "
                               f"{generation} (the operator has not caught up yet)"))
    width = max(STATUS_LABEL_WIDTH, max(len(k) for k, _ in fields) + 3)
    out = [(f"{k}:" if k else "").ljust(width) + v for k, v in fields]
    conditions = st.get("conditions") or []
    if conditions:
        out.append("Conditions:")
        out.append(table(("TYPE", "STATUS", "REASON", "MESSAGE"),
                         [(c.get("type"), c.get("status"), c.get("reason"), one_line(c.get("message")))
                          for c in conditions], indent="  ").rstrip("\n"))
    else:
        out.append("Conditions:".ljust(width) + NONE)
    evs = events_of(events, gs)
    if evs:
        out.append("Events:")
        out.append(table(("TYPE", "REASON", "AGE", "MESSAGE"),
                         [(e.get("type"), e.get("reason"), event_age(e, now), one_line(e.get("message")))
                          for e in evs], indent="  ").rstrip("\n"))
    else:
        out.append("Events:".ljust(width) + NONE)
    return "\n".join(out) + "\n"


