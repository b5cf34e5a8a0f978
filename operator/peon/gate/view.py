"""What the gate knows of one sleeping server, and what it decides when someone knocks.

The gate stands in for sleeping servers at their own addresses (issue 25). Its protocol code
(a2s, minecraft, quake3, protocols) is pure: bytes in, bytes and a decision
out, over the typed view here. Sockets, Kubernetes and the clock live in the gate's server.

Defaults chosen here (the next layer reads them from the GameServer and the catalogue):
- `wake_on_connect` is on: a server the gate stands in for exists to be woken by its players;
  an owner who wants only Discord/API starts turns it off, and then a join is answered "asleep"
  and wakes nothing.
- `wake_players` (Minecraft only) is None: anyone whose client logs in may wake it. A set limits
  waking to those names (compared case-insensitively, as Minecraft names are unique that way).
"""
from __future__ import annotations

import collections
import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Callable, Hashable

JOIN_TO_WAKE = "asleep, join to wake"
# Every string shown is cut to this many UTF-8 bytes: an A2S_INFO answer then stays one datagram
# well under 1,400 bytes, and the Minecraft status far under its 32,767-unit bound.
TEXT_MAX = 120


@dataclass(frozen=True)
class SleepingServer:
    """The server's last real answer (or its spec when never seen), and its wake rules."""
    name: str
    map: str = ""
    folder: str = ""           # A2S game folder (e.g. "valheim")
    game: str = ""             # A2S game description / Quake 3 gamename
    app_id: int = 0            # Steam app id
    version: str = ""          # game version text (A2S, Minecraft version name, Quake 3 version)
    protocol: int | None = None  # Minecraft protocol / Quake 3 protocol number; None: never seen
    max_players: int = 0
    port: int = 0              # the game port, as clients know it
    wake_on_connect: bool = True
    window_open: bool = True   # inside an uptime window, or the server has none
    opens_at: dt.datetime | None = None  # the next window's start, in the server's time zone
    # For the "wakes at" text: a day is named when not today. Not part of what the view is: the
    # gate compares views to know whether a status event changed anything, and a view kept
    # from an older event names a day a little more often than needed, never wrongly (the
    # window it names is still ahead, and the clock only moves on).
    now: dt.datetime | None = field(default=None, compare=False)
    wake_players: frozenset[str] | None = None
    start_seconds: int = 60    # how long it usually takes to start (for "join again in N s")
    info: tuple[tuple[str, str], ...] = ()  # other keys of its last Quake 3 serverinfo

    @property
    def may_wake(self) -> bool:
        return self.wake_on_connect and self.window_open

    @property
    def mark(self) -> str:
        """What the server list shows: that it sleeps, and whether a join wakes it."""
        if not self.wake_on_connect:
            return "asleep"
        if not self.window_open:
            return f"asleep: wakes at {_when(self.opens_at, self.now)}" if self.opens_at \
                else "asleep: outside its hours"
        return JOIN_TO_WAKE

    @property
    def shown_map(self) -> str:
        """The map column carries the mark: server browsers show it, and keywords they hide."""
        return f"{cut(self.map, 60)} ({self.mark})" if self.map else self.mark


def _when(at: dt.datetime, now: dt.datetime | None) -> str:
    if now is not None and at.date() != now.astimezone(at.tzinfo).date():
        return at.strftime("%a %H:%M")
    return at.strftime("%H:%M")


def cut(text: str, limit: int = TEXT_MAX) -> str:
    """At most `limit` UTF-8 bytes, cut on a character boundary, without NULs or newlines."""
    text = text.replace("\x00", "").replace("\n", " ").replace("\r", " ")
    raw = text.encode("utf-8")
    return raw[:limit].decode("utf-8", "ignore") if len(raw) > limit else text


@dataclass(frozen=True)
class Knock:
    """Someone tried to join: whether it wakes the server, why, and who (when the protocol says)."""
    wake: bool
    reason: str        # "join", or why not: "wake switched off", "outside its hours", "not allowed"
    how: str           # "login" (Minecraft), "connect" (Quake 3), "datagram", "tcp"
    player: str | None = None


def knock(server: SleepingServer, how: str, player: str | None = None) -> Knock:
    """The one wake rule every protocol follows."""
    if not server.wake_on_connect:
        return Knock(False, "wake switched off", how, player)
    if not server.window_open:
        return Knock(False, "outside its hours", how, player)
    if server.wake_players is not None and player is not None and \
            player.casefold() not in {p.casefold() for p in server.wake_players}:
        return Knock(False, "not allowed", how, player)
    if server.wake_players is not None and player is None:
        return Knock(False, "not allowed", how, player)  # a list, and no name to check it by
    return Knock(True, "join", how, player)


# --- refusals and their counters ----------------------------------------------------------------

REASONS = frozenset({
    "empty", "short", "long", "bad header", "bad payload", "bad length", "unknown request",
    "deprecated request", "bad challenge", "bad string", "bad varint", "bad packet id",
    "bad state", "bad player name", "legacy ping", "trailing bytes", "not a query",
    "rate limited", "scan",
})


class Refused(ValueError):
    """The bytes are not what the protocol allows; `reason` is one of REASONS (a metric label)."""

    def __init__(self, reason: str, detail: str = ""):
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass
class Drops:
    """Packets dropped, by protocol and reason: a bounded set of labels for the gate's metrics."""
    counts: collections.Counter = field(default_factory=collections.Counter)

    def add(self, protocol: str, reason: str) -> None:
        assert reason in REASONS, reason
        self.counts[(protocol, reason)] += 1

    def total(self) -> int:
        return sum(self.counts.values())


# --- rate limit -------------------------------------------------------------------------------

class RateLimiter:
    """A token bucket per source (`rate` tokens a second, up to `burst`), the clock injected.

    At most `max_sources` buckets are kept (least recently seen forgotten first): a flood from
    many spoofed sources costs bounded memory, and a forgotten source only gets a full bucket
    again. `allow` with the key None is a single global bucket when built for one.
    """

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic,
                 max_sources: int = 65536):
        if rate <= 0 or burst < 1 or max_sources < 1:
            raise ValueError("rate must be > 0, burst >= 1, max_sources >= 1")
        self.rate, self.burst, self.clock, self.max_sources = rate, burst, clock, max_sources
        # source -> [tokens, last seen]: a list changed in place (no tuple built per packet)
        self.buckets: collections.OrderedDict[Hashable, list[float]] = collections.OrderedDict()

    def allow(self, source: Hashable, now: float | None = None) -> bool:
        """A token for `source` at `now` (the clock's time when None)."""
        if now is None:
            now = self.clock()
        bucket = self.buckets.get(source)
        if bucket is None:
            bucket = self.buckets[source] = [self.burst, now]
            if len(self.buckets) > self.max_sources:
                self.buckets.popitem(last=False)
        else:
            self.buckets.move_to_end(source)
            elapsed = now - bucket[1]
            if elapsed > 0:
                tokens = bucket[0] + elapsed * self.rate
                bucket[0] = tokens if tokens < self.burst else self.burst
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return True
        return False
