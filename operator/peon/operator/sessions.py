"""Uptime, the I/O half of uptime.py: read what status remembers and what the prober last
heard from the server, decide, and say what to write back. Called by the controller."""
from __future__ import annotations

import logging
from typing import Any

from peon import ANNOTATION_SLEEP, ANNOTATION_WAKE
from peon.shared import clock, uptime
from .cache import Cache
from peon.shared.model import Game, GameServer
from peon.shared.pods import log_pod
from peon.shared.render import CONTAINER
from .prober import Prober, Target

log = logging.getLogger(__name__)


class Sessions:
    def __init__(self, cache: Cache, prober: Prober):
        self.cache, self.prober = cache, prober

    def forget(self, ns: str, name: str) -> None:
        self.prober.forget((ns, name))

    def decide(self, body: dict, gs: GameServer, game: Game
               ) -> tuple[uptime.Decision, dict, dict | None, float | None]:
        """(decision, status.uptime, status.players or None, seconds to look again)."""
        policy = gs.uptime
        now = clock.now()
        old = (body.get("status") or {})
        mem = old.get("uptime") or {}
        annotations = body["metadata"].get("annotations") or {}
        wake = clock.parse(annotations.get(ANNOTATION_WAKE))
        sleep = clock.parse(annotations.get(ANNOTATION_SLEEP))
        probe, players_status, requeue = None, old.get("players"), None
        idle = (gs.namespace, gs.name)
        # The count matters to an idle stop, and to changes that wait for an empty server.
        if (policy.idle_after or gs.maintenance.wants_players) and game.query.protocol != "none" \
                and mem.get("running", True):
            target = self.target(gs, game)
            if target is not None:
                self.prober.want(idle, target)  # it queues this server when the answer changes
            else:
                self.prober.forget(idle)
            probe = self.prober.latest(idle)
            if probe is not None:
                prev = old.get("players") or {}
                last_seen = prev.get("lastSeen")
                if probe.online == 0 and (prev.get("online") or 0) > 0:
                    last_seen = clock.iso(now)  # the moment the last player was seen leaving
                players_status = {"online": probe.online, "max": probe.max}
                # What it calls itself, for the wake gate's answers while it sleeps.
                for k in ("name", "map", "version", "protocol", "game"):
                    if getattr(probe, k) is not None:
                        players_status[k] = getattr(probe, k)
                if game.query.protocol in NAMING:  # always: a merge patch keeps what it omits
                    players_status["names"] = list(probe.names[:NAMES_SHOWN])
                if last_seen:
                    players_status["lastSeen"] = last_seen
        else:
            self.prober.forget(idle)
        observed = uptime.Observed(
            now=now, session_start=clock.parse(mem.get("sessionStart")),
            session_end=clock.parse(mem.get("sessionEnd")), end_reason=mem.get("endReason"), wake=wake, sleep=sleep,
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

    def players_now(self, gs: GameServer) -> int | None:
        """The players on now, as the server last answered; None while not known."""
        probe = self.prober.latest((gs.namespace, gs.name))
        return probe.online if probe is not None else None

    def target(self, gs: GameServer, game: Game) -> Target | None:
        """Where to ask: the override address, else the Service's cluster IP on the Game's
        query port; None while the Service has no address."""
        interval = min(gs.uptime.probe_interval, max(1.0, clock.requeue_cap()))
        if game.query.protocol == "log":
            return self.log_target(gs, game, interval)
        if gs.uptime.probe_address:
            host, port = gs.uptime.probe_address
            return Target(game.query.protocol, host, port, interval)
        svc = self.cache.children.get(("Service", gs.namespace, gs.name))
        port = next((p for p in game.ports if p.name == game.query.port), None)
        ip = ((svc or {}).get("spec") or {}).get("clusterIP")
        if not ip or ip == "None" or port is None:
            return None
        return Target(game.query.protocol, ip, port.container_port, interval)


    def log_target(self, gs: GameServer, game: Game, interval: float) -> Target | None:
        """The server's pod and its game container, running; None while there is none."""
        pod = log_pod(self.cache.pods_of(gs.namespace, gs.name), gs.name)
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            return None
        status = next((c for c in (pod.get("status") or {}).get("containerStatuses") or ()
                       if c.get("name") == CONTAINER), None)
        if not status or "running" not in (status.get("state") or {}) \
                or not status.get("containerID") or game.query.log is None:
            return None
        return Target("log", pod["metadata"]["name"], 0, interval, namespace=gs.namespace,
                      container=CONTAINER, container_id=status["containerID"],
                      rules=game.query.log)


NAMES_SHOWN = 64  # names status.players lists at most (the CRD's maxItems)
NAMING = ("log", "quake3")  # the protocols whose answer names the players on


def transition_event(old: dict[str, Any], new: dict[str, Any]) -> tuple[str, str] | None:
    """An Event for an automatic start or stop: (reason, message), or None."""
    was, now_ = (old or {}).get("running"), new.get("running")
    # A change of spec.state is the user's own doing, not an automatic start or stop.
    if was is None or was == now_ or "Stopped" in (new.get("reason"), (old or {}).get("reason")):
        return None
    if now_:
        return "AutoStart", f"started: {new['message']} ({new['reason']})"
    return "AutoStop", f"stopped: {new['message']} ({new['reason']})"
