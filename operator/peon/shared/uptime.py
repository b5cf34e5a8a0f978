"""When should a server run? Pure policy: spec.uptime, the clock and what the server reported
in, a decision out (run or not, why, and when to look again). The operator never writes spec:
`spec.state: Stopped` always wins, and what it must remember (when the session started, when
it was ended, when players were last seen) it keeps in status.

A *session* is a stretch of running that the policy started: at a window's start, on a
wake-up (`peon.dev/wake` annotation), or when nothing restricts the server. A session ends
by the session timer (`maxDuration`), the daily stop time (`stopAt`), idleness (nobody on for
`idle.after`, counted from the end of the boot grace period), or a stop asked for (the
`peon.dev/sleep` annotation: a time, now or later; a wake-up after it cancels it). An ended
session stays ended until the next window starts or the next wake-up. The two annotations are
how the PEON API and `kubectl peon` start and stop a server whose spec lives in Git.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any, Mapping
from zoneinfo import ZoneInfo

from .backup import parse_duration

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
WAKE_SESSION = dt.timedelta(hours=4)  # a wake-up without a session timer lasts this long
STOP_REQUESTED = "StopRequested"


@dataclass(frozen=True)
class Window:
    days: tuple[int, ...]  # 0 = Monday
    start: dt.time
    end: dt.time  # at or before start: the window ends the next day


@dataclass(frozen=True)
class Policy:
    time_zone: str = "UTC"
    windows: tuple[Window, ...] = ()
    max_duration: dt.timedelta | None = None
    stop_at: dt.time | None = None
    idle_after: dt.timedelta | None = None
    idle_grace: dt.timedelta = dt.timedelta(minutes=10)
    probe_interval: float = 30.0  # seconds between player queries
    probe_address: tuple[str, int] | None = None  # ask here instead of the Service
    backup_before_stop: bool = False

    @property
    def restricts(self) -> bool:
        return bool(self.windows or self.max_duration or self.stop_at or self.idle_after)


@dataclass(frozen=True)
class Observed:
    now: dt.datetime
    session_start: dt.datetime | None = None
    session_end: dt.datetime | None = None
    end_reason: str | None = None
    wake: dt.datetime | None = None
    sleep: dt.datetime | None = None  # a stop asked for, at this time
    players: int | None = None  # None: unknown (no answer yet, or the query failed)
    last_seen: dt.datetime | None = None


@dataclass(frozen=True)
class Decision:
    run: bool
    reason: str
    message: str
    next_change: dt.datetime | None = None
    session_start: dt.datetime | None = None
    session_end: dt.datetime | None = None
    end_reason: str | None = None


def _hhmm(text: str) -> dt.time:
    h, m = text.split(":")
    return dt.time(int(h), int(m))


def parse_policy(spec: Mapping[str, Any] | None) -> Policy:
    u = spec or {}
    ZoneInfo(u.get("timeZone") or "UTC")  # raises for an unknown zone
    windows = []
    for w in u.get("windows") or []:
        days = tuple(DAYS.index(d) for d in (w.get("days") or DAYS))
        windows.append(Window(days, _hhmm(w["start"]), _hhmm(w["end"])))
    session, idle = u.get("session") or {}, u.get("idle") or {}
    return Policy(
        time_zone=u.get("timeZone") or "UTC", windows=tuple(windows),
        max_duration=parse_duration(session["maxDuration"]) if session.get("maxDuration") else None,
        stop_at=_hhmm(session["stopAt"]) if session.get("stopAt") else None,
        idle_after=parse_duration(idle["after"]) if idle.get("after") else None,
        idle_grace=parse_duration(idle["grace"]) if idle.get("grace") else dt.timedelta(minutes=10),
        probe_interval=float(idle.get("probeIntervalSeconds") or 30),
        probe_address=_host_port(idle["probeAddress"]) if idle.get("probeAddress") else None,
        backup_before_stop=bool(u.get("backupBeforeStop", False)))


def _host_port(address: str) -> tuple[str, int]:
    """host:port or [IPv6]:port (the CRD's pattern asks for the port; this says so if not)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"idle.probeAddress {address!r} must be host:port")
    return host.strip("[]"), int(port)


def _local(day: dt.date, t: dt.time, tz: ZoneInfo) -> dt.datetime:
    # A wall time that does not exist (the spring-forward gap) falls after the gap;
    # one that exists twice (autumn) is the first.
    naive = dt.datetime.combine(day, t)
    aware = naive.replace(tzinfo=tz)
    back = aware.astimezone(dt.timezone.utc).astimezone(tz).replace(tzinfo=None)
    if back != naive:  # in the gap
        aware = (naive + dt.timedelta(hours=1)).replace(tzinfo=tz)
    return aware


def window_spans(policy: Policy, around: dt.datetime, days_before: int = 1, days_after: int = 8):
    """(start, end) of every window occurrence near `around`, as aware datetimes."""
    tz = ZoneInfo(policy.time_zone)
    today = around.astimezone(tz).date()
    for offset in range(-days_before, days_after + 1):
        day = today + dt.timedelta(days=offset)
        for w in policy.windows:
            if day.weekday() not in w.days:
                continue
            start = _local(day, w.start, tz)
            end_day = day if w.end > w.start else day + dt.timedelta(days=1)
            yield start, _local(end_day, w.end, tz)


def current_window(policy: Policy, now: dt.datetime) -> tuple[dt.datetime, dt.datetime] | None:
    """The window occurrence containing now (earliest start; end extended over overlaps)."""
    spans = sorted(s for s in window_spans(policy, now) if s[0] <= now < s[1])
    if not spans:
        return None
    start, end = spans[0][0], max(e for _, e in spans)
    # Overlapping or touching windows make one stretch.
    extended = True
    while extended:
        extended = False
        for s, e in window_spans(policy, now, 1, 9):
            if s <= end < e:
                end, extended = e, True
    return start, end


def next_window_start(policy: Policy, now: dt.datetime) -> dt.datetime | None:
    return min((s for s, _ in window_spans(policy, now) if s > now), default=None)


def last_stop_at(policy: Policy, now: dt.datetime) -> dt.datetime | None:
    if policy.stop_at is None:
        return None
    tz = ZoneInfo(policy.time_zone)
    today = now.astimezone(tz).date()
    t = _local(today, policy.stop_at, tz)
    return t if t <= now else _local(today - dt.timedelta(days=1), policy.stop_at, tz)


def next_stop_at(policy: Policy, now: dt.datetime) -> dt.datetime:
    tz = ZoneInfo(policy.time_zone)
    today = now.astimezone(tz).date()
    t = _local(today, policy.stop_at, tz)
    return t if t > now else _local(today + dt.timedelta(days=1), policy.stop_at, tz)


def decide(policy: Policy, spec_running: bool, o: Observed) -> Decision:
    now = o.now
    if not spec_running:
        return Decision(False, "Stopped", "spec.state is Stopped")
    # A stop asked for that has come ends the session as a timer would; one still to come is a
    # limit on the session. A wake-up after it cancels it.
    asked = o.sleep is not None and (o.wake is None or o.wake < o.sleep)
    future_stop = o.sleep if asked and o.sleep > now else None
    session_end, end_reason = o.session_end, o.end_reason
    if end_reason == STOP_REQUESTED and not (asked and o.sleep <= now):
        session_end, end_reason = None, None  # taken back: a start since (even in that second)
    if asked and o.sleep <= now and (session_end is None or o.sleep > session_end):
        session_end, end_reason = o.sleep, STOP_REQUESTED
    o = dataclasses.replace(o, session_end=session_end, end_reason=end_reason)
    if not policy.restricts:
        if end_reason == STOP_REQUESTED:
            return Decision(False, STOP_REQUESTED, _ended_message(STOP_REQUESTED) +
                            ", until a wake-up", session_end=session_end, end_reason=end_reason)
        return Decision(True, "AlwaysOn", "no uptime policy" + (
            f", until the stop asked for at {future_stop:%Y-%m-%d %H:%M} UTC" if future_stop else ""),
            future_stop, session_start=o.session_start or now)

    window = current_window(policy, now) if policy.windows else None
    woken = o.wake is not None and o.wake <= now and (o.session_end is None or o.wake > o.session_end)
    # A new session begins at a window's start or a wake-up after the last one ended.
    trigger = None
    if woken:
        trigger = o.wake
    if window and (o.session_end is None or window[0] > o.session_end):
        trigger = max(trigger, window[0]) if trigger else window[0]
    if not policy.windows and not woken and o.session_end is None:
        trigger = o.session_start or now  # unrestricted by windows: the first session runs
    upcoming = next_window_start(policy, now) if policy.windows else None

    if trigger is None:
        if policy.windows and window is None:
            return Decision(False, "OutsideWindow", "outside the uptime windows", upcoming,
                            session_end=o.session_end, end_reason=o.end_reason)
        return Decision(False, o.end_reason or "SessionEnded",
                        _ended_message(o.end_reason) + (", until the next window" if upcoming else
                                                         ", until a wake-up or a change of spec"),
                        upcoming, session_end=o.session_end, end_reason=o.end_reason)

    start = o.session_start if o.session_start and o.session_start >= trigger else trigger
    limits: list[tuple[dt.datetime, str]] = []
    if policy.max_duration:
        limits.append((start + policy.max_duration, "SessionTimer"))
    elif woken and not window:
        limits.append((start + WAKE_SESSION, "SessionTimer"))
    if policy.stop_at:
        last = last_stop_at(policy, now)
        # Past a stop time that fell inside this session: it ends; else the next one ends it.
        limits.append((last if last > start else next_stop_at(policy, now), "StopTime"))
    if future_stop:
        limits.append((future_stop, STOP_REQUESTED))
    if policy.idle_after:
        boot_over = start + policy.idle_grace
        if o.players == 0:
            empty_since = max(boot_over, o.last_seen or start)
            limits.append((empty_since + policy.idle_after, "Idle"))
    for when, why in sorted(limits):
        if when <= now:
            return Decision(False, why, _ended_message(why), upcoming, session_end=now,
                            end_reason=why)
    changes = [when for when, _ in limits]
    if window and not woken:
        changes.append(window[1])
    if policy.idle_after and o.players != 0:
        changes.append(now + dt.timedelta(minutes=1))  # keep asking how many are on
    if woken and not window:
        reason, msg = "WokenUp", f"woken up at {o.wake:%Y-%m-%d %H:%M} UTC"
    elif window:
        reason, msg = "InWindow", f"inside the uptime window until {window[1]:%Y-%m-%d %H:%M %Z}"
    else:
        reason, msg = "InSession", "session running"
    return Decision(True, reason, msg, min(changes) if changes else None, session_start=start)


def _ended_message(reason: str | None) -> str:
    return {"SessionTimer": "the session timer ran out",
            "StopTime": "it is past the daily stop time",
            "Idle": "nobody was on",
            STOP_REQUESTED: "a stop was asked for"}.get(reason or "", "the session ended")
