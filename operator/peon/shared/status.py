"""Pure status computation: what the children show in, the GameServer's status out."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from . import clock

PENDING, STARTING, RUNNING, STOPPING, STOPPED, ERROR = (
    "Pending", "Starting", "Running", "Stopping", "Stopped", "Error")


def now_iso() -> str:
    return clock.iso(clock.now())


def condition(type_: str, ok: bool | None, reason: str, message: str, generation: int) -> dict:
    return {"type": type_, "status": "Unknown" if ok is None else ("True" if ok else "False"),
            "reason": reason, "message": message, "observedGeneration": generation}


def merge_conditions(old: Iterable[Mapping], new: Iterable[dict], now: str) -> list[dict]:
    """New conditions keep their old lastTransitionTime unless their status changed."""
    before = {c["type"]: c for c in old or ()}
    out = []
    for c in new:
        prev = before.get(c["type"])
        c = dict(c)
        c["lastTransitionTime"] = (prev.get("lastTransitionTime")
                                   if prev and prev.get("status") == c["status"] else now)
        out.append(c)
    return out


def server_phase(want_running: bool, deployment: Mapping | None, pods: list[Mapping]) -> tuple[str, str]:
    """The phase and a sentence saying why."""
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")
            and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")]
    if not want_running:
        if pods or (deployment and deployment.get("status", {}).get("replicas", 0)):
            return STOPPING, "waiting for the server's pod to stop"
        return STOPPED, "the server is stopped; its world is kept"
    if deployment is None:
        return PENDING, "creating the server"
    st, gen = deployment.get("status", {}), deployment["metadata"].get("generation")
    rolled = st.get("observedGeneration") == gen and st.get("updatedReplicas", 0) >= 1
    if rolled and st.get("readyReplicas", 0) >= 1 and st.get("replicas", 0) == 1:
        return RUNNING, "the server is up"
    if any(p.get("spec", {}).get("nodeName") for p in live):
        return STARTING, "the server's pod is starting"
    for p in live:
        for c in p.get("status", {}).get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False":
                return PENDING, f"the pod cannot be scheduled: {c.get('message', c.get('reason'))}"
    return PENDING, "waiting for the server's pod to be scheduled"


def endpoints(service: Mapping | None, pods: list[Mapping], host_ports: bool,
              ports: list[Mapping]) -> list[dict]:
    """Where each named port is reached, by the Service's type (Agones-style addresses)."""
    host_ip = next((p.get("status", {}).get("hostIP") for p in pods
                    if p.get("status", {}).get("hostIP")), None)
    out = []
    if host_ports:
        if host_ip:
            out = [{"name": p["name"], "address": host_ip, "port": p["containerPort"],
                    "protocol": p.get("protocol", "UDP")} for p in ports]
        return out
    if not service:
        return out
    spec = service.get("spec", {})
    kind = spec.get("type", "ClusterIP")
    ingress = (service.get("status", {}).get("loadBalancer", {}).get("ingress") or [{}])[0]
    lb_addr = ingress.get("ip") or ingress.get("hostname")
    for sp in spec.get("ports") or []:
        if kind == "LoadBalancer" and lb_addr:
            addr, port = lb_addr, sp["port"]
        elif kind in ("NodePort", "LoadBalancer") and host_ip and sp.get("nodePort"):
            addr, port = host_ip, sp["nodePort"]
        elif spec.get("clusterIP") and spec["clusterIP"] != "None":
            addr, port = spec["clusterIP"], sp["port"]
        else:
            continue
        out.append({"name": sp["name"], "address": addr, "port": port,
                    "protocol": sp.get("protocol", "TCP")})
    return out


def summary_endpoint(eps: list[Mapping]) -> str:
    return f"{eps[0]['address']}:{eps[0]['port']}" if eps else ""


def _clean(v: Any) -> Any:
    """None means "remove" in a merge patch; a removed field and an absent one are the same."""
    if isinstance(v, Mapping):
        return {k: _clean(x) for k, x in v.items() if x is not None}
    return v


def status_differs(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """True when writing `new` would change what `old` says (fields the operator owns only)."""
    return any(_clean(old.get(k)) != _clean(v) for k, v in new.items())


# --- the GameServer's status, assembled (pure) ---------------------------------------------------

TRANSITIONAL = (PENDING, STARTING, STOPPING)
# A phase on the way somewhere is written only once it has lasted this long: a server that is
# up within it shows Running as its first phase (one status write, not three), and one that
# takes longer (an image pull, a slow boot) shows where it is after at most this delay.
SETTLE_SECONDS = 2.0


def settle_wait(phase: str, since: float | None, now: float) -> float | None:
    """Seconds to hold back a status whose phase is `phase`, transitional since `since`
    (monotonic); None to write it now."""
    if phase not in TRANSITIONAL or since is None:
        return None
    left = SETTLE_SECONDS - (now - since)
    return left if left > 0 else None


# What the uptime memory records of a session: a status that changes one of these carries a
# decision (a stop, a start) and is written at once, whatever its phase.
SESSION_MEMORY = ("running", "sessionEnd", "endReason")


def records_a_decision(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Does `new` change the uptime decision `old` recorded? Such a status is not held back:
    its uptime is the memory the next reconcile decides from. Held back, an idle stop was
    forgotten by the look that followed (the pod going, its players unknown again, that look
    found no reason to stop and started the server again: a stop and a start every few seconds).
    A first decision (no uptime recorded yet) may wait with its phase, as a new server's does."""
    was = old.get("uptime")
    if not was:
        return False
    now = new.get("uptime") or {}
    return any(_clean(was.get(k)) != _clean(now.get(k)) for k in SESSION_MEMORY)


@dataclass(frozen=True)
class Built:
    """What a reconcile that built the server knows, for its status."""
    game_uid: str
    ports: list[dict]  # the Game's ports: name, containerPort, protocol
    image: str
    want_running: bool
    host_ports: bool
    extra: tuple[dict, ...] = ()  # more conditions (Updated)
    backup: dict | None = None
    why_stopped: str | None = None
    more: Mapping[str, Any] | None = None  # uptime, players


def invalid_status(gen: int, reason: str, message: str, deployment: Mapping | None,
                   pods: list[Mapping]) -> tuple[dict, list[dict]]:
    """(status fields, conditions) of a server whose spec cannot be built."""
    phase = ERROR
    if deployment is not None:  # what was built before still runs, or stops: say which
        phase, _ = server_phase(bool((deployment.get("spec") or {}).get("replicas")), deployment, pods)
    return ({"phase": phase, "observedGeneration": gen},
            [condition("Valid", False, reason, message, gen),
             condition("Ready", False, "Invalid", "the spec cannot be built; see Valid", gen)])


def built_status(gen: int, b: Built, deployment: Mapping | None, service: Mapping | None,
                 pods: list[Mapping]) -> tuple[dict, list[dict]]:
    """(status fields, conditions) of a server built as its spec says."""
    phase, why = server_phase(b.want_running, deployment, pods)
    if b.why_stopped and phase in (STOPPING, STOPPED):
        why = b.why_stopped
    # A stopped server has no address to give players (it showed the cluster IP).
    eps = [] if phase == STOPPED else endpoints(service, pods, b.host_ports, b.ports)
    new: dict[str, Any] = {"phase": phase, "observedGeneration": gen, "game": b.game_uid,
                           "image": b.image, "endpoints": eps, "endpoint": summary_endpoint(eps)}
    if b.backup:
        new["backup"] = b.backup
    for k, v in (b.more or {}).items():
        if v is not None:
            new[k] = v
    seeded, seed_failed = seed_report(pods)
    if seeded:
        new["seed"] = seeded
    ready = condition("Ready", phase == RUNNING, phase, why, gen)
    if seed_failed and phase != RUNNING:
        ready = condition("Ready", False, SEED_FAILED, seed_failed, gen)
    return new, [condition("Valid", True, "Resolved", f"game {b.game_uid}, image {b.image}", gen),
                 ready, *b.extra]


# --- the world's seed from the store (the game pod's init step `seed`) ---------------------------

SEED_FAILED = "SeedFailed"


def _seed_end(pod: Mapping) -> tuple[dict, dict]:
    """The seed step's last end: (its terminated state, its message parsed)."""
    for c in (pod.get("status") or {}).get("initContainerStatuses") or ():
        if c.get("name") != "seed":
            continue
        for k in ("state", "lastState"):  # a step that failed and waits to retry: lastState
            end = (c.get(k) or {}).get("terminated")
            if end:
                try:
                    said = json.loads(end.get("message") or "")
                except ValueError:
                    said = None
                return end, said if isinstance(said, dict) else {}
    return {}, {}


def seed_report(pods: list[Mapping]) -> tuple[dict | None, str | None]:
    """(status.seed for a world seeded from the store, the reason a seed failed). A world the
    seed kept (it held data) says nothing."""
    for p in pods:
        if p["metadata"].get("deletionTimestamp"):
            continue
        end, said = _seed_end(p)
        if not end:
            continue
        if end.get("exitCode") == 0 and said.get("seeded"):
            return {"snapshot": said["seeded"], "snapshotTime": said.get("time"),
                    "seededAt": end.get("finishedAt")}, None
        if end.get("exitCode") not in (0, None):
            why = said.get("error") or (end.get("message") or "").strip()[-400:] or \
                f"the seed step exited with {end.get('exitCode')}"
            return None, f"the world could not be seeded from the store: {why}"
    return None, None


def seed_events(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """The Events a status write says about the seed, each once: Seeded when status.seed is
    new, SeedFailed when the Ready condition's reason becomes it or its message changes."""
    out = []
    seed = new.get("seed")
    if seed and seed != old.get("seed"):
        taken, done = clock.parse(seed.get("snapshotTime")), clock.parse(seed.get("seededAt"))
        age = f", taken {_age(done - taken)} before" if taken and done else ""
        out.append(("Normal", "Seeded", f"seeded the world from the store's snapshot "
                    f"{seed['snapshot'][:8]} of {seed.get('snapshotTime')}{age}"))
    ready = next((c for c in new.get("conditions") or () if c.get("type") == "Ready"), {})
    was = next((c for c in old.get("conditions") or () if c.get("type") == "Ready"), {})
    if ready.get("reason") == SEED_FAILED and (was.get("reason") != SEED_FAILED
                                              or was.get("message") != ready.get("message")):
        out.append(("Warning", SEED_FAILED, ready["message"]))
    return out


def _age(delta) -> str:
    """3d4h, 2h15m, 40m, 12s: how old a snapshot was when it seeded the world."""
    s = max(0, int(delta.total_seconds()))
    d, h, m = s // 86400, s % 86400 // 3600, s % 3600 // 60
    if d:
        return f"{d}d{h}h"
    if h:
        return f"{h}h{m}m"
    return f"{m}m" if m else f"{s}s"
