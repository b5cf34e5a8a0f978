"""Maintenance, pure (issue 28): whether a change that would restart a running server waits
for it to be empty, until when, when players are warned, and when a scheduled restart is due.

A change that rolls the pod (a new image, settings, its Game, a restart asked for) is *held*
while players are on, up to `maxDelay` after it was first seen; it is applied at once when the
server is empty, stopped or asleep, or when its owner chose `policy: Now`. A server whose
player count cannot be read is held too, and applied at the deadline (said in status). Before
a held change is applied with players on, and before a scheduled restart, players are warned
through the Game's console at the times `warnings` names (10, 5 and 1 minutes by default).
No I/O here: operator/maintenance.py reads the cluster and says things.
"""
from __future__ import annotations

import base64
import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence
from zoneinfo import ZoneInfo

from croniter import croniter

from .backup import parse_duration

WHEN_EMPTY, NOW = "WhenEmpty", "Now"
DEFAULT_MAX_DELAY = dt.timedelta(hours=6)
DEFAULT_WARNINGS = (dt.timedelta(minutes=10), dt.timedelta(minutes=5), dt.timedelta(minutes=1))
# Reasons, for the ChangePending condition and status.maintenance.reason.
PLAYERS_ONLINE, PLAYERS_UNKNOWN = "PlayersOnline", "PlayersUnknown"
NO_CHANGE, APPLIED_EMPTY, APPLIED_NOT_RUNNING, APPLIED_NOW, APPLIED_DEADLINE = (
    "NoChange", "ServerEmpty", "NotRunning", "PolicyNow", "DeadlineReached")
SAY_LIMIT = 200  # characters of one warning, as consoles take them
# An update (item 4): on the GameServer, the time it was asked (`kubectl peon update`); on the
# pod template, the update that template makes (it pulls the image again).
ANNOTATION_UPDATE = "peon.dev/update"


@dataclass(frozen=True)
class Policy:
    """spec.maintenance. Without the block a change rolls at once, as before (policy Now)."""
    policy: str = NOW
    max_delay: dt.timedelta = DEFAULT_MAX_DELAY
    warnings: tuple[dt.timedelta, ...] = DEFAULT_WARNINGS  # longest first
    restart_schedule: str | None = None
    time_zone: str = "UTC"
    update_schedule: str | None = None  # updates of a moving tag (the image pulled again)
    update_time_zone: str = "UTC"

    @property
    def wants_players(self) -> bool:
        """Whether the player count matters (asked of the server while it runs)."""
        return self.policy == WHEN_EMPTY or bool(self.restart_schedule or self.update_schedule)


def parse_policy(spec: Mapping[str, Any] | None, now: dt.datetime) -> Policy:
    """Raises ValueError (or LookupError for an unknown zone) with what is wrong."""
    if spec is None:
        return Policy()
    policy = spec.get("policy") or WHEN_EMPTY
    if policy not in (WHEN_EMPTY, NOW):
        raise ValueError(f"policy must be {WHEN_EMPTY} or {NOW}, not {policy!r}")
    max_delay = parse_duration(spec["maxDelay"]) if spec.get("maxDelay") else DEFAULT_MAX_DELAY
    warnings = DEFAULT_WARNINGS
    if spec.get("warnings") is not None:
        warnings = tuple(sorted({parse_duration(w) for w in spec["warnings"]}, reverse=True))
        if any(w <= dt.timedelta(0) for w in warnings):
            raise ValueError("a warning must come some minutes before, not 0m")
    cron, tz = parse_schedule(spec, "restartSchedule", now)
    update_cron, update_tz = parse_schedule(spec, "updateSchedule", now)
    return Policy(policy, max_delay, warnings, cron, tz, update_cron, update_tz)


def parse_schedule(spec: Mapping[str, Any], field: str, now: dt.datetime
                   ) -> tuple[str | None, str]:
    sched = spec.get(field) or {}
    cron, tz = sched.get("cron"), sched.get("timeZone") or "UTC"
    ZoneInfo(tz)  # raises for an unknown zone
    if cron:
        try:
            croniter(cron, now.astimezone(ZoneInfo(tz))).get_next(dt.datetime)
        except (ValueError, KeyError) as e:  # croniter's bad cron and bad date errors
            raise ValueError(f"{field}.cron {cron!r} never fires or is not a cron "
                             f"schedule ({type(e).__name__})") from None
    return cron or None, tz


# --- the console a Game declares -----------------------------------------------------------------

RCON, EXEC = "rcon", "exec"


@dataclass(frozen=True)
class Console:
    """How to say something in the game: Source RCON (Minecraft's RCON is the same protocol)
    on one of the Game's TCP ports with the password a setting holds, or a command run in the
    server's container (such as rcon-cli) with the console command as its last argument."""
    protocol: str
    port: str | None = None  # rcon: the name of the Game's port
    password_key: str | None = None  # rcon: the env setting that holds the password
    command: tuple[str, ...] = ()  # exec
    say: str = "say {message}"

    def say_command(self, message: str) -> str:
        return self.say.replace("{message}", one_line(message))


def parse_console(spec: Mapping[str, Any] | None) -> Console | None:
    if not spec:
        return None
    return Console(spec.get("protocol", RCON), spec.get("port"), spec.get("passwordKey"),
                   tuple(spec.get("command") or ()), spec.get("say") or "say {message}")


def check_console(console: Console | None, ports: Mapping[str, str]) -> str | None:
    """What is wrong with a Game's console (ports: name -> protocol), or None. The CRD refuses
    these at admission; this is for a Game written before the rules."""
    if console is None:
        return None
    if console.protocol == RCON:
        if not console.port or ports.get(console.port) != "TCP":
            return f"console.port {console.port!r} is not one of the Game's TCP ports"
        if not console.password_key:
            return "console.passwordKey is required for rcon"
    elif console.protocol == EXEC:
        if not console.command:
            return "console.command is required for exec"
    else:
        return f"console.protocol must be {RCON} or {EXEC}"
    if "{message}" not in console.say:
        return "console.say must contain {message}"
    return None


def console_password(console: Console | None, env: Sequence[Any],
                     secrets: Sequence[Mapping[str, Any] | None]) -> str | None:
    """The console's password as the server's pod reads it: the env setting `passwordKey` (or
    one of its aliases, `env` being the Game's GameEnv entries) from the server's Secrets in the
    order its pod reads them (its settings Secret, then those named by secretRef; a later one
    wins), else the Game's plain default. None when nothing gives it."""
    key = console.password_key if console else None
    if not key:
        return None
    entry = next((e for e in env if e.name == key), None)
    names = (key, *(entry.aliases if entry else ()))
    value = None
    for secret in secrets:
        data = (secret or {}).get("data") or {}
        found = next((n for n in names if n in data), None)
        if found:
            value = base64.b64decode(data[found]).decode("utf-8", errors="replace")
    if value is None and entry is not None and entry.default and "$(" not in entry.default:
        value = entry.default
    return value


def one_line(text: str) -> str:
    """What a console is sent: one line, no control characters, bounded."""
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", text).strip()
    return text[:SAY_LIMIT]


def minutes(left: dt.timedelta) -> str:
    m = max(1, int((left.total_seconds() + 59) // 60))  # rounded up: never later than said
    return f"{m} minute" + ("" if m == 1 else "s")


def warning_text(left: dt.timedelta, what: str) -> str:
    return one_line(f"[Peon] The server restarts in {minutes(left)} ({what}).")


# --- the decision --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Observed:
    now: dt.datetime
    pending: str | None  # what would roll the pod, in words ("new settings"); None: nothing
    running: bool  # a ready pod that players could be on, which the rendered spec keeps running
    players: int | None  # None: not known (no query, no answer)
    pending_since: dt.datetime | None  # when the held change was first seen
    restart_done: dt.datetime | None  # the last scheduled restart done, or since when scheduled
    warned_for: dt.datetime | None  # the deadline the warnings sent so far counted down to
    warned_down_to: dt.timedelta | None  # the shortest warning sent for it


@dataclass(frozen=True)
class Plan:
    apply: bool  # render the new pod template now
    reason: str
    message: str
    pending_since: dt.datetime | None = None  # kept while held
    deadline: dt.datetime | None = None  # the held change is applied then at the latest
    restart_slot: dt.datetime | None = None  # a scheduled restart to do now
    next_restart: dt.datetime | None = None
    warn: str | None = None  # a warning to say now
    warned_for: dt.datetime | None = None
    warned_down_to: dt.timedelta | None = None
    look_again: dt.datetime | None = None

    @property
    def held(self) -> bool:
        return not self.apply


def restart_slots(policy: Policy, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The last slot at or before now and the next after it, aware."""
    return slots(policy.restart_schedule, policy.time_zone, now)


def slots(cron: str, tz: str, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    local = now.astimezone(ZoneInfo(tz))
    nxt = croniter(cron, local).get_next(dt.datetime)
    prev = croniter(cron, local + dt.timedelta(seconds=1)).get_prev(dt.datetime)
    return prev, nxt


def update_due(policy: Policy, now: dt.datetime, asked: dt.datetime | None,
               done: dt.datetime | None, since: dt.datetime | None
               ) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The update to make (its name: the time it was asked, or the schedule's slot), or None;
    and the next scheduled update. `done` is the last update made, `since` when the schedule
    was first seen (no slot before it is made up, nor older missed slots)."""
    wanted = []
    if asked is not None and (done is None or asked > done):
        wanted.append(asked)
    nxt = None
    if policy.update_schedule:
        prev, nxt = slots(policy.update_schedule, policy.update_time_zone, now)
        floor = max((t for t in (done, since) if t is not None), default=None)
        if floor is not None and prev > floor:
            wanted.append(prev)
    return max(wanted, default=None), nxt


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def decide(policy: Policy, o: Observed) -> Plan:
    now = o.now
    # A scheduled restart: due when its slot passed since the last one (missed older slots
    # are not made up); otherwise the next slot is a deadline players are warned for.
    slot = next_restart = None
    if policy.restart_schedule:
        prev, next_restart = restart_slots(policy, now)
        if o.restart_done is not None and prev > o.restart_done:
            slot = prev
    who = "nobody is on" if o.players == 0 else (
        plural(o.players, "player") + " on" if o.players is not None
        else "the player count cannot be read")

    if not o.pending:
        held_plan = None
    elif not o.running:
        held_plan = Plan(True, APPLIED_NOT_RUNNING, f"{o.pending}: applied; the server was not "
                         "running")
    elif policy.policy == NOW:
        held_plan = Plan(True, APPLIED_NOW, f"{o.pending}: applied at once (policy {NOW})")
    elif o.players == 0:
        held_plan = Plan(True, APPLIED_EMPTY, f"{o.pending}: applied; nobody is on")
    else:
        since = o.pending_since or now
        deadline = since + policy.max_delay
        if now >= deadline:
            held_plan = Plan(True, APPLIED_DEADLINE, f"{o.pending}: applied at its deadline "
                             f"({who})")
        else:
            reason = PLAYERS_ONLINE if o.players is not None else PLAYERS_UNKNOWN
            wait = ("applied when they leave, or at the latest at the deadline"
                    if o.players is not None else
                    "applied at the deadline, or when the server is seen empty before")
            held_plan = Plan(False, reason, f"{o.pending} waits: {who}; {wait}",
                             pending_since=since, deadline=deadline)
    if slot is not None:
        # The scheduled restart now; it takes a held change with it.
        what = "scheduled restart" + (f" with {o.pending}" if o.pending else "")
        return Plan(True, "ScheduledRestart", f"{what}: restarted ({who})", restart_slot=slot,
                    next_restart=next_restart, look_again=next_restart)
    plan = held_plan or Plan(True, NO_CHANGE, "no change waits")
    # Warnings count down to the nearest moment the server will restart with players on.
    targets = []
    if plan.held:
        targets.append((plan.deadline, o.pending))
    if next_restart is not None and o.running and o.players != 0:
        targets.append((next_restart, "scheduled restart"))
    look = [next_restart] if next_restart else []
    warn = None
    warned_for = warned_down_to = None  # nothing to count down to: forgotten
    if targets and o.players != 0 and o.running:
        warned_for, warned_down_to = o.warned_for, o.warned_down_to
        target, what = min(targets, key=lambda t: t[0])
        if warned_for != target:
            warned_for, warned_down_to = target, None
        left = target - now
        due = [w for w in policy.warnings
               if left <= w and (warned_down_to is None or w < warned_down_to)]
        if due:
            warn = warning_text(left, what)
            warned_down_to = min(due)
        later = [target - w for w in policy.warnings if target - w > now]
        look += later + [target]
    if plan.held:
        look.append(plan.deadline)
    return Plan(plan.apply, plan.reason, plan.message, plan.pending_since, plan.deadline,
                None, next_restart, warn, warned_for, warned_down_to,
                min((t for t in look if t > now), default=None))
