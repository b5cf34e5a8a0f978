"""Uptime, the I/O half of uptime.py: read what status remembers, ask the server how many
players are on (when due), decide, and say what to write back. Called by the controller."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from . import clock, players, uptime
from .model import Game, GameServer, InvalidSpec

if TYPE_CHECKING:
    from .controller import Controller

log = logging.getLogger(__name__)
ANNOTATION_WAKE = "peon.dev/wake"


def policy_of(body: dict) -> uptime.Policy:
    try:
        return uptime.parse_policy((body.get("spec") or {}).get("uptime"))
    except (ValueError, KeyError, LookupError) as e:
        raise InvalidSpec("InvalidUptimePolicy", f"spec.uptime: {e}") from e


class Sessions:
    def __init__(self, ctl: "Controller"):
        self.ctl = ctl
        self._probes: dict[tuple[str, str], tuple[float, players.Players | None]] = {}

    def decide(self, body: dict, gs: GameServer, game: Game, policy: uptime.Policy
               ) -> tuple[uptime.Decision, dict, dict | None, float | None]:
        """(decision, status.uptime, status.players or None, seconds to look again)."""
        now = clock.now()
        old = (body.get("status") or {})
        mem = old.get("uptime") or {}
        wake = clock.parse((body["metadata"].get("annotations") or {}).get(ANNOTATION_WAKE))
        probe, players_status, requeue = None, old.get("players"), None
        idle = (gs.namespace, gs.name)
        if policy.idle_after and game.query.protocol != "none" and mem.get("running", True):
            interval = self._interval(body)
            last = self._probes.get(idle)
            if last is None or time.monotonic() - last[0] >= interval:
                probe = self._ask(body, gs, game)
                self._probes[idle] = (time.monotonic(), probe)
            else:
                probe = last[1]
            requeue = interval
            if probe is not None:
                prev = old.get("players") or {}
                last_seen = prev.get("lastSeen")
                if probe.online == 0 and (prev.get("online") or 0) > 0:
                    last_seen = clock.iso(now)  # the moment the last player was seen leaving
                players_status = {"online": probe.online, "max": probe.max}
                if last_seen:
                    players_status["lastSeen"] = last_seen
        else:
            self._probes.pop(idle, None)
        observed = uptime.Observed(
            now=now, session_start=clock.parse(mem.get("sessionStart")),
            session_end=clock.parse(mem.get("sessionEnd")), end_reason=mem.get("endReason"), wake=wake,
            players=probe.online if probe is not None else None,
            last_seen=clock.parse((players_status or {}).get("lastSeen")))
        d = uptime.decide(policy, gs.state == "Running", observed)
        status = {"running": d.run, "reason": d.reason, "message": d.message,
                  "nextChange": clock.iso(d.next_change), "sessionStart": clock.iso(d.session_start),
                  "sessionEnd": clock.iso(d.session_end), "endReason": d.end_reason}
        if d.next_change:
            wait = (d.next_change - now).total_seconds()
            requeue = min(filter(None, [requeue, max(0.5, min(clock.requeue_cap(), wait))]))
        return d, status, players_status, requeue

    def _interval(self, body: dict) -> float:
        idle = ((body.get("spec") or {}).get("uptime") or {}).get("idle") or {}
        return min(float(idle.get("probeIntervalSeconds") or 30), max(1.0, clock.requeue_cap()))

    def _ask(self, body: dict, gs: GameServer, game: Game) -> players.Players | None:
        """Ask the override address, else the Service's cluster IP on the Game's query port."""
        idle = ((body.get("spec") or {}).get("uptime") or {}).get("idle") or {}
        if idle.get("probeAddress"):
            # host:port or [IPv6]:port (the CRD's pattern guarantees the port).
            host, _, port = idle["probeAddress"].rpartition(":")
            return players.query(game.query.protocol, host.strip("[]"), int(port))
        svc = self.ctl.cache.children.get(("Service", gs.namespace, gs.name))
        port = next((p for p in game.ports if p.name == game.query.port), None)
        ip = ((svc or {}).get("spec") or {}).get("clusterIP")
        if not ip or ip == "None" or port is None:
            return None
        return players.query(game.query.protocol, ip, port.container_port)


def transition_event(old: dict[str, Any], new: dict[str, Any]) -> tuple[str, str] | None:
    """An Event for an automatic start or stop: (reason, message), or None."""
    was, now_ = (old or {}).get("running"), new.get("running")
    # A change of spec.state is the user's own doing, not an automatic start or stop.
    if was is None or was == now_ or "Stopped" in (new.get("reason"), (old or {}).get("reason")):
        return None
    if now_:
        return "AutoStart", f"started: {new['message']} ({new['reason']})"
    return "AutoStop", f"stopped: {new['message']} ({new['reason']})"
