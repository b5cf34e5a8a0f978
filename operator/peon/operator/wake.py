"""The operator's side of the wake gate (issue 25): which sleeping servers the gate stands in
for, at which of its ports, and what a knock does.

    stand_in(...)   a sleeping server's Service loses its selector and gains an EndpointSlice to
                    the gate pod's IP and the ports allocated for it; status.gate tells the gate
                    what to answer (the view) and where to listen (ports)
    knocked(...)    the gate's knock (status.knock, written by the gate) becomes a start exactly
                    like the API's: the peon.dev/wake annotation, never a spec write; told in
                    status.lastKnock, an Event and the metric peon_wake_knocks_total

The gate reads GameServers (status.gate) and writes only status.knock; it never learns a
Kubernetes address of its own to point at (the operator checks the gate pod's IP itself), so a
gate that is taken over cannot redirect a Service. docs/design.md, "Wake gate", says why.

A server is at the gate when its wake switch is on (spec.wakeOnConnect.enabled, on by default),
a gate pod is ready, and: it is meant to be off and no pod of it is left, or it was at the gate
and its new pod is not ready yet (the gate keeps answering while the server boots, so a client
retrying finds the game itself the moment it is up).
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from prometheus_client import Counter

from peon import LABEL_GAMESERVER, LABEL_MANAGED_BY, MANAGED_BY
from peon.shared import actions, clock, uptime
from peon.shared.model import Game, GameServer

log = logging.getLogger(__name__)

KNOCKS = Counter("peon_wake_knocks_total", "Knocks the gate handed on, by outcome "
                 "(woke, or why not)", ["outcome"])

SLICE_MANAGER = "operator.peon.dev"   # endpointslice.kubernetes.io/managed-by (a label value: no "/")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
KNOCK_NAME_MAX = 16       # a Minecraft name's bound; other text is cut to this
KNOCK_TEXT_MAX = 64


@dataclass(frozen=True)
class Config:
    """Where the gate runs (None: no gate, nothing here acts) and the ports it may bind."""
    namespace: str | None = None
    selector: str = "app.kubernetes.io/component=wake-gate"
    port_min: int = 20000
    port_max: int = 29999
    poll_seconds: float = 5.0


# --- pure: the switch, the ports, the view, the Service and its slice ------------------------

@dataclass(frozen=True)
class Switch:
    enabled: bool = True
    minecraft_allow: frozenset[str] | None = None  # None: anyone may wake it


def switch_of(spec: Mapping[str, Any]) -> Switch:
    """spec.wakeOnConnect: {enabled (default true), minecraftAllow: [names]}."""
    w = spec.get("wakeOnConnect") or {}
    allow = w.get("minecraftAllow")
    return Switch(w.get("enabled", True) is not False,
                  frozenset(str(n) for n in allow) if allow is not None else None)


def port_plan(game: Game) -> list[dict[str, Any]]:
    """Each of the Game's ports the gate serves: its role there and the protocol spoken.

    The query port (A2S) is answered and never wakes. With the Game's `connect` (its join port
    and protocol), only that port takes a join: an admin port (RCON) is not served, so it wakes
    nothing. Without it, the generic rule: every other port takes a join (Minecraft's TCP ports
    speak Minecraft when the Game's query is the Minecraft ping)."""
    out = []
    c = game.connect
    for p in game.ports:
        transport = p.protocol.lower()
        if transport not in ("udp", "tcp"):
            continue  # SCTP: the gate does not listen
        if game.query.protocol == "a2s" and transport == "udp" and p.name == game.query.port \
                and p.name != c.port:
            role, speaks = "query", "a2s"
        elif c.port is not None:
            if p.name != c.port:
                continue
            role = "game"
            speaks = c.protocol if c.protocol in ("minecraft", "quake3", "a2s") \
                else f"generic-{transport}"
        elif game.query.protocol == "minecraft" and transport == "tcp":
            role, speaks = "game", "minecraft"
        elif game.query.protocol == "a2s" and transport == "udp":
            role, speaks = "game", "a2s"
        else:
            role, speaks = "game", f"generic-{transport}"
        out.append({"name": p.name, "port": p.container_port, "protocol": p.protocol,
                    "role": role, "speaks": speaks})
    return out


def window(policy: uptime.Policy, now: dt.datetime) -> tuple[bool, dt.datetime | None]:
    """(may a knock wake it now, when the next window opens): without windows, always."""
    if not policy.windows:
        return True, None
    if uptime.current_window(policy, now) is not None:
        return True, None
    return False, uptime.next_window_start(policy, now)


def view_of(gs: GameServer, game: Game, status: Mapping[str, Any], switch: Switch,
            now: dt.datetime) -> dict[str, Any]:
    """status.gate.view: what the gate answers for the server (SleepingServer's fields)."""
    open_, opens_at = window(gs.uptime, now)
    players = status.get("players") or {}
    port = next((p.container_port for p in game.ports if p.name != game.query.port),
                game.ports[0].container_port if game.ports else 0)
    # The server's last answer (status.players, from the prober), else its spec.
    seen = {k: players[k] for k in ("map", "version") if isinstance(players.get(k), str)}
    # The game it said it is (a Quake 3 browser drops a server whose gamename is not its own).
    said = players.get("game") if isinstance(players.get("game"), str) and players["game"] \
        else None
    if type(players.get("protocol")) is int:
        seen["protocol"] = players["protocol"]
    view: dict[str, Any] = {
        **seen,
        "name": players.get("name") if isinstance(players.get("name"), str) and players["name"]
        else gs.server_name or gs.name,
        "game": said or game.title or game.uid, "folder": game.uid,
        "max_players": int(players.get("max") or 0), "port": port,
        # spec.state Stopped wins over any wake-up: answered, never woken
        "wake_on_connect": switch.enabled and gs.state == "Running", "window_open": open_,
        "opens_at": clock.iso(opens_at) if opens_at else None,
    }
    if switch.minecraft_allow is not None:
        view["wake_players"] = sorted(switch.minecraft_allow)
    return view


def pod_ready(pod: Mapping[str, Any]) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or ())


def live(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def at_gate(running: bool, was_at_gate: bool, pods: list[Mapping[str, Any]]) -> bool:
    if not running:
        return not any(live(p) for p in pods)
    return was_at_gate and not any(pod_ready(p) for p in pods)


def without_selector(service: dict[str, Any]) -> dict[str, Any]:
    """The rendered Service with no selector: server-side apply then removes the operator's
    selector (the operator owns it), and keeps the cluster IP, node ports and load balancer."""
    return {**service, "spec": {k: v for k, v in service["spec"].items() if k != "selector"}}


def endpoint_slice(gs: GameServer, ports: list[dict[str, Any]], ip: str,
                   owner: dict[str, Any], node: str | None = None) -> dict[str, Any]:
    """The slice that sends the Service's ports to the gate pod's ports for this server. The
    gate's node is named: with externalTrafficPolicy Local, kube-proxy serves a node port only
    from endpoints on its own node, and an endpoint without a node is on none."""
    endpoint: dict[str, Any] = {"addresses": [ip], "conditions": {"ready": True}}
    if node:
        endpoint["nodeName"] = node
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{gs.name}-gate"[:253], "namespace": gs.namespace,
                     "labels": {SERVICE_NAME_LABEL: gs.name, MANAGED_BY_LABEL: SLICE_MANAGER,
                                LABEL_GAMESERVER: gs.name, LABEL_MANAGED_BY: MANAGED_BY},
                     "ownerReferences": [owner]},
        "addressType": "IPv6" if ":" in ip else "IPv4",
        "endpoints": [endpoint],
        "ports": [{"name": p["name"], "port": p["gatePort"], "protocol": p["protocol"]}
                  for p in ports],
    }


# --- knocks ---------------------------------------------------------------------------------

def pending_knock(status: Mapping[str, Any]) -> dict[str, Any] | None:
    """The gate's knock not handled yet (status.knock newer than status.lastKnock), cleaned."""
    k = status.get("knock")
    if not isinstance(k, Mapping):
        return None
    at = clock.parse(k.get("at")) if isinstance(k.get("at"), str) else None
    if at is None:
        return None
    done = clock.parse((status.get("lastKnock") or {}).get("at"))
    if done is not None and at <= done:
        return None
    player = k.get("player")
    return {"at": clock.iso(at), "address": str(k.get("address") or "")[:KNOCK_TEXT_MAX],
            "how": str(k.get("how") or "")[:KNOCK_TEXT_MAX],
            "player": str(player)[:KNOCK_NAME_MAX] if player else None}


def decide(knock: Mapping[str, Any], switch: Switch, open_: bool, opens_at: dt.datetime | None,
           running: bool, spec_running: bool = True) -> tuple[bool, str]:
    """(wake, outcome): the operator's own check of the gate's knock, the same rule as
    gate.view.knock (the gate is not trusted to have applied it)."""
    if running:
        return False, "already running"
    if not spec_running:
        return False, "stopped by its spec"
    if not switch.enabled:
        return False, "wake switched off"
    if not open_:
        return False, f"outside its hours (opens {clock.iso(opens_at)})" if opens_at \
            else "outside its hours"
    if switch.minecraft_allow is not None:
        player = knock.get("player")
        if not player or player.casefold() not in {n.casefold() for n in switch.minecraft_allow}:
            return False, "not allowed"
    return True, "woke"


def who(knock: Mapping[str, Any]) -> str:
    return f"{knock['address'] or 'unknown address'}" + (
        f" (player {knock['player']})" if knock.get("player") else "") + \
        (f" by {knock['how']}" if knock.get("how") else "")


# --- the I/O half -----------------------------------------------------------------------------

class Wake:
    """Called from reconcile threads; the gate pod's address is polled on a thread of its own."""

    def __init__(self, kube, cache, queue_all: Callable[[list], None],
                 config: Config | None = None):
        self.kube, self.cache, self.queue_all = kube, cache, queue_all
        self.config = config or Config()
        self.lock = threading.Lock()
        self.ports: dict[int, tuple[str, str]] = {}   # gate port -> server (ns, name)
        self.by_server: dict[tuple[str, str], dict[str, int]] = {}
        self.seeded = False
        self.ip: str | None = None
        self.node: str | None = None    # the gate pod's node (the slice's nodeName)
        self.slices: dict[tuple[str, str], str | None] = {}  # what was applied (digest) or None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.config.namespace is not None

    # the gate pod's address
    def start(self) -> None:
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="wake-gate", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while True:
            try:
                self.poll()
            except Exception as e:
                log.warning("wake gate: cannot read the gate's pods: %s", type(e).__name__)
            if self._stop.wait(self.config.poll_seconds):
                return

    def poll(self) -> None:
        """The first ready gate pod's IP; a change re-queues the servers at the gate."""
        pods = self.kube.list("Pod", self.config.namespace, self.config.selector)
        ready = next((p for p in sorted(pods, key=lambda p: p["metadata"]["name"])
                      if pod_ready(p) and (p.get("status") or {}).get("podIP")), None)
        ip = ready["status"]["podIP"] if ready else None
        node = (ready.get("spec") or {}).get("nodeName") if ready else None
        if (ip, node) != (self.ip, self.node):
            log.info("wake gate: gate pod at %s", ip or "(none ready)")
            self.ip, self.node = ip, node
            self.queue_all([("GameServer", *k) for k in list(self.by_server)] +
                           [("GameServer", *k) for k, v in list(self.slices.items()) if v])

    # gate ports
    def _seed(self) -> None:
        for key, body in list(self.cache.gameservers.items()):
            for p in (((body.get("status") or {}).get("gate") or {}).get("ports") or ()):
                if isinstance(p.get("gatePort"), int):
                    self.ports.setdefault(p["gatePort"], key)
                    self.by_server.setdefault(key, {})[p["name"]] = p["gatePort"]
        self.seeded = True

    def allocate(self, key: tuple[str, str], names: list[str]) -> dict[str, int]:
        with self.lock:
            if not self.seeded:
                self._seed()
            mine = {n: port for n, port in self.by_server.get(key, {}).items() if n in names}
            for n in names:
                if n in mine:
                    continue
                taken = set(mine.values())
                port = next((q for q in range(self.config.port_min, self.config.port_max + 1)
                             if q not in self.ports and q not in taken), None)
                if port is None:
                    raise RuntimeError("the gate's port range is full")
                mine[n] = port
            for n, port in self.by_server.get(key, {}).items():
                if mine.get(n) != port:
                    self.ports.pop(port, None)
            for port in mine.values():
                self.ports[port] = key
            self.by_server[key] = mine
            return dict(mine)

    def release(self, key: tuple[str, str]) -> None:
        with self.lock:
            for port in self.by_server.pop(key, {}).values():
                if self.ports.get(port) == key:
                    del self.ports[port]

    # one reconcile
    def knocked(self, body: dict, gs: GameServer, running: bool) -> tuple[dict, dict | None]:
        """A knock not handled yet: (the body, after the wake-up annotation when it wakes and
        status.lastKnock, both written). The annotation is the API's start
        (actions.start_patch)."""
        status = body.get("status") or {}
        knock = pending_knock(status)
        if knock is None:
            return body, None
        now = clock.now()
        switch = switch_of(body.get("spec") or {})
        open_, opens_at = window(gs.uptime, now)
        wake, outcome = decide(knock, switch, open_, opens_at, running, gs.state == "Running")
        KNOCKS.labels("woke" if wake else outcome.split(" (")[0]).inc()
        if wake:
            body = self.kube.merge_patch("GameServer", gs.namespace, gs.name,
                                         actions.start_patch(now))
            self.cache.put(self.cache.gameservers, (gs.namespace, gs.name), body, False)
            self.kube.event(body, "Normal", "WokenByKnock", f"woken: {who(knock)} knocked")
        else:
            self.kube.event(body, "Normal", "KnockIgnored", f"{who(knock)} knocked: {outcome}")
        log.info("%s/%s: knock from %s: %s", gs.namespace, gs.name, who(knock), outcome)
        told = {**knock, "outcome": outcome}
        # Written now, not with the rest of the status (which waits while a phase settles):
        # a knock is handled once.
        body = self.kube.patch_status("GameServer", gs.namespace, gs.name, {"lastKnock": told})
        self.cache.put(self.cache.gameservers, (gs.namespace, gs.name), body, False)
        return body, told

    def stand_in(self, body: dict, gs: GameServer, game: Game, desired: list[dict],
                 running: bool) -> tuple[list[dict], dict | None]:
        """(the children, with the Service's selector taken away while at the gate;
        status.gate, None when the gate is not in use here)."""
        key = (gs.namespace, gs.name)
        status = body.get("status") or {}
        was = bool((status.get("gate") or {}).get("serving"))
        switch = switch_of(body.get("spec") or {})
        plan = port_plan(game)
        here = (self.enabled and switch.enabled and self.ip is not None and bool(plan)
                and at_gate(running, was, self.cache.pods_of(*key)))
        if not here:
            self.release(key)
            self.slices.setdefault(key, "unknown" if was else None)
            return desired, ({"serving": False, "ports": None, "view": None, "address": None}
                             if was or status.get("gate") else None)
        ports = self.allocate(key, [p["name"] for p in plan])
        for p in plan:
            p["gatePort"] = ports[p["name"]]
        out = [without_selector(d) if d["kind"] == "Service" else d for d in desired]
        view = view_of(gs, game, status, switch, clock.now())
        return out, {"serving": True, "address": self.ip, "ports": plan, "view": view}

    def point(self, body: dict, gs: GameServer, gate: dict | None) -> None:
        """After the Service: the slice to the gate applied, or (back at the game) deleted."""
        key = (gs.namespace, gs.name)
        if gate and gate.get("serving"):
            from .cache import digest
            owner = {"apiVersion": body["apiVersion"], "kind": "GameServer",
                     "name": gs.name, "uid": gs.uid, "controller": True,
                     "blockOwnerDeletion": True}
            want = endpoint_slice(gs, gate["ports"], gate["address"], owner, self.node)
            h = digest(want)
            if self.slices.get(key) != h:
                self.kube.apply(want)
                self.slices[key] = h
            return
        if self.slices.get(key) is not None:
            from kubernetes.client.rest import ApiException
            try:
                self.kube.delete("EndpointSlice", gs.namespace, f"{gs.name}-gate"[:253])
            except ApiException as e:
                if e.status != 404:
                    raise
            self.slices[key] = None

    def forget(self, key: tuple[str, str]) -> None:
        self.release(key)
        self.slices.pop(key, None)


def main_args(ap) -> None:
    """The operator's command-line options for the gate."""
    ap.add_argument("--gate-namespace", default=None,
                    help="where the wake gate runs: sleeping servers are answered by it and "
                         "woken when a player connects (off when omitted)")
    ap.add_argument("--gate-selector", default=Config.selector,
                    help="the gate pods' label selector")
    ap.add_argument("--gate-ports", default=f"{Config.port_min}-{Config.port_max}",
                    help="the gate pod's ports to allocate to sleeping servers' ports")


def config_from(args) -> Config:
    """The gate's settings from the command line (main.py; handed on in kopf's memo)."""
    low, _, high = str(args.gate_ports).partition("-")
    lo, hi = int(low), int(high or low)
    if not 1024 <= lo <= hi <= 65535:
        raise ValueError(f"--gate-ports {args.gate_ports}: a range within 1024-65535")
    return Config(args.gate_namespace, args.gate_selector, lo, hi)

