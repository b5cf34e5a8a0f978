"""A lost node (issue 26, item 3): a server whose node has been NotReady or gone for
`spec.storage.recoverAfter` moves off it.

- Its world on a volume bound to that node (the PersistentVolume's affinity pins its
  hostname: local, local-path): it is rebuilt on a NEW claim, `<server>-data-r<n>`, seeded from the
  store's newest snapshot (the seed step of `render.seed_container`, `latest`); the old claim
  is kept, labelled and annotated as left behind, reported in status.recovery and an Event. The
  snapshot's age is the play that was lost, said in status and a Warning.
- Its world on a volume that can move (no affinity to one host: a network or zonal disk): the
  stuck pod is deleted (at once:
  its kubelet cannot confirm) so the Deployment places the server elsewhere.
- Without a store (or without a snapshot in it) a node-bound world cannot be rebuilt: the
  status says so, and nothing starts on an empty world.

The decisions are pure (`lost_since`, `pv_bound_node`, `decide`, `recovery_status`,
`current_claim`, ...); `LostNodes.judge` reads the facts (a Node and a PersistentVolume, only
for opted-in servers whose pod is not ready) and acts. Which claim is current is read from the
claims themselves (the newest claim annotated `peon.dev/recovered-from` for this server), never
from the spec (the operator never writes it) and not only from status: a node that returns
finds the server on its new claim and nothing points back.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from kubernetes.client.rest import ApiException

from peon import LABEL_GAMESERVER, LABEL_MANAGED_BY, MANAGED_BY
from peon.shared import clock
from peon.shared import status as st
from peon.shared.model import parse_game
from peon.shared.render import data_claim  # the world's claim, as rendered

log = logging.getLogger(__name__)

ANNOTATION_RECOVERED_FROM = "peon.dev/recovered-from"  # on a claim made by a recovery: JSON
ANNOTATION_LEFT_BEHIND = "peon.dev/left-behind"        # on the claim it replaced: JSON
LABEL_LEFT_BEHIND = "peon.dev/left-behind"             # "true" on that claim too (selectable)
HOSTNAME = "kubernetes.io/hostname"
CONDITION = "NodeLost"
MAX_RECOVERIES = 99  # <server>-data-r2 .. -r99: far beyond what a person would let happen


class Reason:
    """The NodeLost condition's reasons and the Events' (named values, as the CRD documents)."""
    NODE_READY = "NodeReady"                 # False: the server's node answers
    WAITING = "NodeNotReady"                 # True: lost, recoverAfter not yet passed
    REBUILT = "RebuiltFromStore"             # Event: a new claim seeded from the store
    RESCHEDULED = "Rescheduled"              # Event: a movable volume, the pod deleted
    NO_STORE = "CannotRecoverWithoutStore"   # True: node-bound world, no spec.backup.store
    NO_SNAPSHOT = "CannotRecoverNoSnapshot"  # True: a store, but no snapshot of this server
    UNREADABLE = "NodeUnreadable"            # True: the operator may not read Nodes or PVs
    LEFT_BEHIND = "ClaimLeftBehind"          # Event: the old claim, kept and unused
    CLAIM_TAKEN = "RecoveryClaimTaken"       # True: the new claim's name is someone else's


class ClaimTaken(Exception):
    """The recovery's claim name exists and is not a claim a recovery of this server made."""


# --- pure facts ----------------------------------------------------------------------------------

def _ready_condition(obj: Mapping | None) -> Mapping:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions") or ()
                 if c.get("type") == "Ready"), {})


def lost_since(node: Mapping | None, node_name: str, pod: Mapping | None,
               now: dt.datetime) -> dt.datetime | None:
    """Since when the node is lost, or None when it is Ready. A node that is gone counts from
    when its pod stopped being ready; a pod that never was (the Deployment's replacement, made
    after the node and its pods were deleted, waiting for a volume bound to that node) from when
    it was scheduled or made: later than the loss, so the wait is never shorter than asked, and
    it ends (now would move with every look: no end, and a message rewritten each time)."""
    if node is None:
        meta = (pod or {}).get("metadata") or {}
        scheduled = next((c for c in ((pod or {}).get("status") or {}).get("conditions") or ()
                          if c.get("type") == "PodScheduled"), {})
        return (clock.parse(_ready_condition(pod).get("lastTransitionTime"))
                or clock.parse(scheduled.get("lastTransitionTime"))
                or clock.parse(meta.get("creationTimestamp")) or now)
    ready = _ready_condition(node)
    if ready.get("status") == "True":
        return None
    # A node that never said it was ready (no kubelet ever came) is lost since it was made.
    return (clock.parse(ready.get("lastTransitionTime"))
            or clock.parse((node.get("metadata") or {}).get("creationTimestamp")) or now)


def pv_bound_node(pv: Mapping | None) -> str | None:
    """The node a PersistentVolume is bound to (its affinity pins one host), or None for a
    volume that can move: no node affinity, or affinity to a zone or anything wider (a zonal
    network disk attaches to another node of its zone: the pod is rescheduled, and no play is
    lost to a rebuild from the store)."""
    spec = (pv or {}).get("spec") or {}
    required = ((spec.get("nodeAffinity") or {}).get("required") or {}).get("nodeSelectorTerms")
    for term in required or ():
        for e in term.get("matchExpressions") or ():
            if e.get("key") == HOSTNAME and e.get("operator") == "In" and len(e.get("values") or ()) == 1:
                return e["values"][0]
    return None


def claim_number(server: str, claim_name: str) -> int | None:
    """2 for `<server>-data-r2`; None for any other name. Plain string work: a pattern made
    per server was compiled again at every reconcile once there were more servers than
    re's cache holds (512), 16% of a reconcile's CPU at 1,000 servers."""
    prefix = f"{server}-data-r"
    digits = claim_name[len(prefix):] if claim_name.startswith(prefix) else ""
    return int(digits) if digits.isascii() and digits.isdigit() else None


def server_claims(children: Mapping, ns: str, server: str, base: str) -> list[Mapping]:
    """The server's world claims in the cache's children: `base` and the recoveries' claims,
    `<server>-data-r2`, `-r3`, ... (made one after another, so looked up until one is missing:
    no scan of every claim in the cluster)."""
    out = [c for n in (base,) if (c := children.get(("PersistentVolumeClaim", ns, n)))]
    for n in range(2, MAX_RECOVERIES + 1):
        c = children.get(("PersistentVolumeClaim", ns, f"{server}-data-r{n}"))
        if c is None:
            break
        out.append(c)
    return out


def recovered_claims(server: str, claims: list[Mapping]) -> list[Mapping]:
    """This server's claims made by a recovery, oldest first."""
    out = []
    for c in claims:
        meta = c.get("metadata") or {}
        n = claim_number(server, meta.get("name", ""))
        if n is not None and (meta.get("labels") or {}).get(LABEL_GAMESERVER) == server \
                and ANNOTATION_RECOVERED_FROM in (meta.get("annotations") or {}):
            out.append((n, c))
    return [c for _, c in sorted(out, key=lambda x: x[0])]


def current_claim(server: str, base: str, claims: list[Mapping]) -> str:
    """The claim the server's world is on: the newest a recovery made, else `base` (the spec's
    existingClaim or `<server>-data`)."""
    made = recovered_claims(server, claims)
    return made[-1]["metadata"]["name"] if made else base


def next_claim_name(server: str, claims: list[Mapping]) -> str:
    taken = [n for c in claims if (n := claim_number(server, c["metadata"]["name"])) is not None]
    return f"{server}-data-r{max(taken, default=1) + 1}"


def stale_pods(pods: list[Mapping], made: list[Mapping]) -> list[Mapping]:
    """Pods on the node of the newest recovery made before it: what a lost node held. A pod
    placed on that node later (it came back) is the server's own and stays."""
    if not made:
        return []
    rec = _json_annotation(made[-1], ANNOTATION_RECOVERED_FROM)
    node, at = rec.get("lostNode"), clock.parse(rec.get("recoveredAt"))
    if not node or at is None:
        return []
    return [p for p in pods if (p.get("spec") or {}).get("nodeName") == node
            and (clock.parse((p.get("metadata") or {}).get("creationTimestamp")) or at) < at]


def _json_annotation(obj: Mapping, key: str) -> dict:
    try:
        v = json.loads(((obj.get("metadata") or {}).get("annotations") or {}).get(key) or "{}")
    except ValueError:
        return {}
    return v if isinstance(v, dict) else {}


def recovery_status(server: str, claims: list[Mapping]) -> dict | None:
    """status.recovery from the claims alone (so it never churns): the current claim, what the
    last recovery lost, and every claim left behind. None when the server was never moved."""
    made = recovered_claims(server, claims)
    left = sorted((c for c in claims
                   if ((c.get("metadata") or {}).get("labels") or {}).get(LABEL_GAMESERVER) == server
                   and ((c.get("metadata") or {}).get("labels") or {}).get(LABEL_LEFT_BEHIND) == "true"),
                  key=lambda c: c["metadata"]["name"])
    if not made and not left:
        return None
    out: dict[str, Any] = {}
    if made:
        last = _json_annotation(made[-1], ANNOTATION_RECOVERED_FROM)
        out = {"claim": made[-1]["metadata"]["name"],
               **{k: last[k] for k in ("fromClaim", "lostNode", "lostSince", "recoveredAt",
                                       "snapshot", "snapshotTime") if isinstance(last.get(k), str)}}
        if out.get("snapshotTime") and out.get("lostSince"):
            out["message"] = (f"rebuilt from snapshot {out.get('snapshot')} taken "
                              f"{window(out['snapshotTime'], out['lostSince'])} before node "
                              f"{out.get('lostNode')} was lost: play since then is not in this world")
    out["leftBehind"] = [{"claim": c["metadata"]["name"],
                          **{k: v for k, v in _json_annotation(c, ANNOTATION_LEFT_BEHIND).items()
                             if k in ("node", "since", "replacedBy") and isinstance(v, str)}}
                         for c in left]
    return out


def window(snapshot_time: str, lost: str) -> str:
    """How long before the loss the snapshot was taken, for people: `12m`, `2h5m`, `3d4h`."""
    a, b = clock.parse(snapshot_time), clock.parse(lost)
    if a is None or b is None:
        return "an unknown time"
    secs = max(0, int((b - a).total_seconds()))
    d, rest = divmod(secs, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    if d:
        return f"{d}d{h}h"
    if h:
        return f"{h}h{m}m"
    if m:
        return f"{m}m{s}s"
    return f"{s}s"


# --- the decision --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Facts:
    server: str
    recover_after: float
    node_name: str                 # the node the server's pod is (or its volume is) bound to
    node: Mapping | None           # that Node; None when it is gone
    pod: Mapping | None            # the server's pod on it, if any
    claim: str                     # the current claim
    pv: Mapping | None             # its PersistentVolume (None: not bound yet)
    has_store: bool
    snapshot: str | None           # the newest off-site snapshot (status.backup.lastOffsite)
    snapshot_time: str | None
    now: dt.datetime


@dataclass(frozen=True)
class Decision:
    action: str                    # none | wait | rebuild | reschedule | cannot
    reason: str
    message: str
    requeue: float | None = None
    since: dt.datetime | None = None


def decide(f: Facts) -> Decision:
    """What to do about a server whose node may be lost."""
    since = lost_since(f.node, f.node_name, f.pod, f.now)
    if since is None:
        return Decision("none", Reason.NODE_READY, f"node {f.node_name} is Ready")
    gone = "gone" if f.node is None else "not Ready"
    waited = (f.now - since).total_seconds()
    bound = pv_bound_node(f.pv)
    if waited < f.recover_after:
        return Decision("wait", Reason.WAITING,
                        f"node {f.node_name} {gone} since {clock.iso(since)}; the server moves "
                        f"after recoverAfter ({int(f.recover_after)}s)",
                        requeue=max(1.0, f.recover_after - waited), since=since)
    if bound is None:
        return Decision("reschedule", Reason.RESCHEDULED,
                        f"node {f.node_name} {gone} since {clock.iso(since)}; its world's volume "
                        "can move: the server's pod is placed on another node", since=since)
    if not f.has_store:
        return Decision("cannot", Reason.NO_STORE,
                        f"node {f.node_name} {gone} since {clock.iso(since)} and the world's "
                        f"volume (claim {f.claim}) is bound to it; without spec.backup.store "
                        "it cannot be rebuilt elsewhere, and no empty world is started",
                        since=since)
    if not f.snapshot:
        return Decision("cannot", Reason.NO_SNAPSHOT,
                        f"node {f.node_name} {gone} since {clock.iso(since)} and the world's "
                        f"volume (claim {f.claim}) is bound to it; the store holds no snapshot "
                        "of this server, and no empty world is started", since=since)
    return Decision("rebuild", Reason.REBUILT,
                    f"node {f.node_name} {gone} since {clock.iso(since)}: the world is rebuilt "
                    f"on a new claim from snapshot {f.snapshot} taken {f.snapshot_time} "
                    f"({window(f.snapshot_time or '', clock.iso(since) or '')} of play before "
                    "the loss is not in it)", since=since)


def lost_condition(d: Decision, generation: int) -> dict:
    """The NodeLost condition: True while the server is held by a lost node."""
    lost = d.action in ("wait", "cannot")
    return st.condition(CONDITION, lost, d.reason if lost else Reason.NODE_READY,
                        d.message if lost else "the server's node answers, or it was moved off "
                        "a lost one", generation)


def new_claim(base_claim: Mapping, name: str, record: Mapping[str, str]) -> dict:
    """The recovery's claim: the rendered world claim (labels, owner, size, class) renamed,
    with what it recovers from."""
    meta = {k: v for k, v in (base_claim.get("metadata") or {}).items()
            if k in ("namespace", "labels", "ownerReferences")}
    meta = {**meta, "name": name, "annotations": {
        ANNOTATION_RECOVERED_FROM: json.dumps(dict(record), sort_keys=True)}}
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta,
            "spec": dict(base_claim["spec"])}


def on_claim(desired: list[dict], claim: str) -> list[dict]:
    """The rendered children with the world on `claim`: the rendered claim dropped (it exists
    already, made by the recovery) and the Deployment's data volume pointed at it."""
    out = []
    for d in desired:
        if d["kind"] == "PersistentVolumeClaim":
            continue
        if d["kind"] == "Deployment":
            pod = d["spec"]["template"]["spec"]
            d = {**d, "spec": {**d["spec"], "template": {**d["spec"]["template"], "spec": {
                **pod, "volumes": [{**v, "persistentVolumeClaim": {"claimName": claim}}
                                   if v.get("name") == "data" else v
                                   for v in pod.get("volumes") or ()]}}}}
        out.append(d)
    return out


# --- acting --------------------------------------------------------------------------------------

@dataclass
class Judged:
    claim: str                                  # the claim the world is on
    recovered: bool                             # made by a recovery: the seed step runs
    condition: dict | None = None               # NodeLost, for opted-in servers
    status: dict | None = None                  # status.recovery
    requeue: float | None = None
    evict: list[str] = field(default_factory=list)  # pods to delete after the build

    def seeding(self, backup):
        """The backup policy the children are rendered with: a recovery's claim starts from
        the store's newest snapshot (the seed step keeps a world that holds data, so later
        starts pass through)."""
        if not self.recovered or backup.store is None:
            return backup
        return replace(backup, store=replace(backup.store, seed="latest"))


class LostNodes:
    def __init__(self, kube, cache):
        self.kube = kube
        self.cache = cache
        self._said: dict[tuple[str, str], str] = {}  # (ns, name) -> the last Warning's message

    def claims_of(self, ns: str, name: str, base: str) -> list[Mapping]:
        return server_claims(self.cache.children, ns, name, base)

    def judge(self, body: Mapping, gs, base_claim: str) -> Judged:
        """Which claim the world is on, and, for a server that opted in, whether its node is
        lost and what to do. Called before the children are rendered."""
        ns, name = gs.namespace, gs.name
        claims = self.claims_of(ns, name, base_claim)
        claim = current_claim(name, base_claim, claims)
        out = Judged(claim, claim != base_claim, status=recovery_status(name, claims))
        stale = self.stale_pods(ns, name, claims)
        out.evict = [p["metadata"]["name"] for p in stale]
        after = gs.storage.recover_after
        if not after:
            return out
        gen = int(body["metadata"].get("generation", 0))
        facts = self.facts(body, gs, claim, after, {id(p) for p in stale})
        if facts is None:
            out.condition = lost_condition(Decision("none", Reason.NODE_READY, ""), gen)
            return out
        if isinstance(facts, str):  # the operator may not read Nodes or PVs
            d = Decision("cannot", Reason.UNREADABLE, facts)
            out.condition = lost_condition(d, gen)
            return out
        d = decide(facts)
        out.requeue = d.requeue
        if d.action == "reschedule":
            # Only pods that were there before the node was lost: one placed on it since (a
            # pod that tolerates everything) would otherwise be deleted again and again.
            out.evict = [p["metadata"]["name"] for p in self.pods_on(ns, name, facts.node_name)
                         if (clock.parse((p.get("metadata") or {}).get("creationTimestamp"))
                             or facts.now) < d.since]
            if out.evict:
                self.kube.event(body, "Warning", Reason.RESCHEDULED, d.message)
        elif d.action == "rebuild":
            try:
                made = self.rebuild(body, gs, facts, d, claims)
            except ClaimTaken as e:
                d = Decision("cannot", Reason.CLAIM_TAKEN, str(e), since=d.since)
            else:
                claims = self.claims_of(ns, name, base_claim)
                out = Judged(made, True, status=recovery_status(name, claims),
                             evict=[p["metadata"]["name"] for p in self.stale_pods(ns, name, claims)])
                d = Decision("none", Reason.NODE_READY, "")
        if d.action == "cannot" and self._said.get((ns, name)) != d.message:
            self._said[(ns, name)] = d.message
            self.kube.event(body, "Warning", d.reason, d.message)
        out.condition = lost_condition(d, gen)
        return out

    def pods_on(self, ns: str, name: str, node: str) -> list[dict]:
        return [p for p in self.cache.pods_of(ns, name)
                if (p.get("spec") or {}).get("nodeName") == node]

    def stale_pods(self, ns: str, name: str, claims: list[Mapping]) -> list[dict]:
        """The server's pods left on the node it was moved off (made before the move)."""
        return stale_pods(self.cache.pods_of(ns, name), recovered_claims(name, claims))

    def facts(self, body: Mapping, gs, claim: str, after: float,
              ignore: set[int] = frozenset()) -> Facts | str | None:
        """What decide() needs, read only when the server's pod is not ready: None when
        nothing is wrong (or nothing runs)."""
        pods = [p for p in self.cache.pods_of(gs.namespace, gs.name) if id(p) not in ignore]
        if not pods or any(_ready_condition(p).get("status") == "True" for p in pods):
            return None
        try:
            # The cache keeps no claim's volume name (a bind is no news for a server).
            pvc = self.kube.get("PersistentVolumeClaim", gs.namespace, claim) or {}
            volume = (pvc.get("spec") or {}).get("volumeName")
            pv = self.kube.get("PersistentVolume", None, volume, resource_version="0") if volume else None
            placed = [p for p in pods if (p.get("spec") or {}).get("nodeName")]
            node_name = placed[0]["spec"]["nodeName"] if placed else (pv_bound_node(pv) or "")
            if not node_name:
                return None  # a pod waiting for a node, with a volume that can go anywhere
            node = self.kube.get("Node", None, node_name, resource_version="0")
        except ApiException as e:
            if e.status == 403:
                return (f"the operator may not read Nodes or PersistentVolumes ({e.reason}); "
                        "spec.storage.recoverAfter needs the chart's cluster role")
            raise
        status = (body.get("status") or {}).get("backup") or {}
        pod = next((p for p in pods if (p.get("spec") or {}).get("nodeName") == node_name),
                   pods[0])
        return Facts(gs.name, after, node_name, node, pod, claim, pv, gs.backup.store is not None,
                     status.get("lastOffsite"), status.get("lastOffsiteTime"), clock.now())

    def rebuild(self, body: Mapping, gs, facts: Facts, d: Decision, claims: list[Mapping]) -> str:
        """Make the new claim and mark the old one as left behind; returns the new claim's name.
        The claim template is the one the server's claims are rendered from."""
        game = self.cache.game(gs.game_uid)
        name = next_claim_name(gs.name, claims)
        now = clock.iso(clock.now())
        record = {"fromClaim": facts.claim, "lostNode": facts.node_name,
                  "lostSince": clock.iso(d.since), "recoveredAt": now,
                  "snapshot": facts.snapshot, "snapshotTime": facts.snapshot_time}
        old = self.cache.children.get(("PersistentVolumeClaim", gs.namespace, facts.claim))
        claim = new_claim(data_claim(gs, parse_game(game)), name, record)
        asked = (((old or {}).get("spec") or {}).get("resources") or {}).get("requests") or {}
        if asked.get("storage"):  # the world fit in the old claim (an existingClaim may be larger)
            claim["spec"] = {**claim["spec"], "resources": {"requests": {"storage": asked["storage"]}}}
        try:
            made = self.kube.create(claim)
        except ApiException as e:
            if e.status != 409:
                raise
            made = self.kube.get("PersistentVolumeClaim", gs.namespace, name)
            if not recovered_claims(gs.name, [made]):
                raise ClaimTaken(f"node {facts.node_name} is lost and the world would be rebuilt "
                                 f"on a new claim {name}, but a claim of that name exists that "
                                 "no recovery of this server made: rename or delete it") from None
        self.cache.put(self.cache.children, ("PersistentVolumeClaim", gs.namespace, name), made, False)
        ours = ((old or {}).get("metadata", {}).get("labels") or {}).get(LABEL_MANAGED_BY) == MANAGED_BY
        if old is not None and ours:  # a user's existingClaim is not Peon's to label
            left = json.dumps({"node": facts.node_name, "since": clock.iso(d.since),
                               "replacedBy": name}, sort_keys=True)
            patched = self.kube.patch_metadata("PersistentVolumeClaim", gs.namespace, facts.claim, {
                "labels": {LABEL_LEFT_BEHIND: "true"}, "annotations": {ANNOTATION_LEFT_BEHIND: left}})
            self.cache.put(self.cache.children, ("PersistentVolumeClaim", gs.namespace, facts.claim),
                           patched, False)
        self.kube.event(body, "Warning", Reason.LEFT_BEHIND,
                        f"claim {facts.claim} stays on node {facts.node_name}, kept and unused"
                        + (f" (labelled {LABEL_LEFT_BEHIND}=true)" if ours else "")
                        + f"; the server now runs on {name}")
        self.kube.event(body, "Warning", Reason.REBUILT, d.message.replace(
            "a new claim", f"a new claim {name}"))
        log.warning("%s/%s: %s", gs.namespace, gs.name, d.message)
        return name

    def evict(self, ns: str, pods: list[str]) -> None:
        """Delete the server's pods on a lost node at once: its kubelet cannot confirm a
        graceful end, and the Deployment (Recreate) waits for them before it starts another."""
        for p in pods:
            self.kube.delete("Pod", ns, p, grace_seconds=0)
            obj = self.cache.pods.get((ns, p))
            if obj is not None:
                self.cache.put(self.cache.pods, (ns, p), obj, True)

    def forget(self, ns: str, name: str) -> None:
        self._said.pop((ns, name), None)
