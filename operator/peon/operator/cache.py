"""What the watches have shown, kept for the reconcilers, with indexes by server.

The watch streams feed it (kopf's and watches.py, through handlers.py) and the reconcilers put
back what they wrote, so the next look acts on it. Every question a reconcile asks (this
server's pods, its backups, the servers of a Game, the servers that name a Secret) is answered
from an index: a reconcile costs the same with 10 servers as with 10,000.

Written from the event loop, the streams' threads and worker threads; one lock keeps a store
and its indexes in step. Readers take copies (`list(...)`) and never hold the lock across a
reconcile.
"""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from sys import intern
from typing import Any, Callable, Hashable, Iterable

from peon import ANNOTATION_APPLIED
from peon.shared.pods import server_of

Key = tuple[str, str, str]  # (kind, namespace, name); a Game's is ("Game", "", name)


def at_least_as_new(a: dict | None, b: dict) -> bool:
    """Is b at least as new as a (or a absent)?"""
    return a is None or at_least(a["metadata"].get("resourceVersion", ""),
                                 b["metadata"].get("resourceVersion", ""))


def at_least(ra: str, rb: str) -> bool:
    """Is resourceVersion rb at least ra? They are opaque, but etcd's are integers."""
    return not (ra.isdigit() and rb.isdigit()) or int(rb) >= int(ra)


def _version(obj: dict) -> str:
    return obj["metadata"].get("resourceVersion", "")


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SecretView:
    """A user's Secret as the reconcile needs it: its keys and a digest of its data (which rolls
    the servers that mount it). The values themselves are never kept."""
    name: str
    keys: frozenset[str]
    digest: str
    resource_version: str
    type: str = "Opaque"

    @classmethod
    def of(cls, obj: dict) -> "SecretView":
        data = obj.get("data") or {}
        return cls(obj["metadata"]["name"], frozenset(data), digest(data),
                   obj["metadata"].get("resourceVersion", ""), obj.get("type") or "Opaque")


class Index:
    """index key -> the store keys whose objects map to it."""

    def __init__(self, keys_of: Callable[[Any, dict], Iterable[Hashable]]):
        self.keys_of = keys_of
        self.entries: dict[Hashable, dict[Any, None]] = {}  # an insertion-ordered set

    def move(self, key: Any, old: dict | None, new: dict | None) -> None:
        before = set(self.keys_of(key, old)) if old is not None else set()
        after = set(self.keys_of(key, new)) if new is not None else set()
        for k in before - after:
            bucket = self.entries.get(k)
            if bucket is not None:
                bucket.pop(key, None)
                if not bucket:
                    del self.entries[k]
        for k in after - before:
            self.entries.setdefault(k, {})[key] = None

    def get(self, k: Hashable) -> list:
        return list(self.entries.get(k, ()))


def _server_pod(key, pod: dict):
    name = server_of(pod)
    if name:
        yield (key[0], name)


def _run_server(key, run: dict):
    gs = (run.get("spec") or {}).get("gameServer")
    if gs:
        yield (key[0], gs)


def _game_uid(key, gs: dict):
    yield (gs.get("spec") or {}).get("gameUid", "")


def _secret_refs(key, gs: dict):
    spec = gs.get("spec") or {}
    for s in spec.get("settings") or []:
        ref = (s.get("secretRef") or {}).get("name")
        if ref:
            yield (key[0], ref)
    store = ((spec.get("backup") or {}).get("store") or {}).get("secretRef") or {}
    if store.get("name"):  # the off-site store's keys: their server is judged again
        yield (key[0], store["name"])


def _aliases(key, game: dict):
    yield from (game.get("spec") or {}).get("aliases") or []


def _slim(obj: dict) -> dict:
    """The object without its managedFields: the reconcile never reads them, and they are a
    large part of every cached object (with this and the change before it, the bench's peak
    RSS at 1,000 servers went from 230 to 167 MiB)."""
    meta = obj.get("metadata")
    if not meta or "managedFields" not in meta:
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


# Strings up to this long are shared between cached objects (sys.intern).
SHARED_STRING = 64


def _shared(obj: Any) -> Any:
    """`obj` rebuilt with its keys and short strings shared with every other cached object's.
    JSON decoding makes each object's own copy of every key and value: 1,000 servers' children
    and servers held 37.6 MiB of cache, 18.4 MiB with their strings shared (the same objects,
    tracemalloc), for about 80 us of CPU per Deployment kept."""
    if isinstance(obj, dict):
        return {intern(k): _shared(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_shared(v) for v in obj]
    if isinstance(obj, str) and len(obj) <= SHARED_STRING:
        return intern(obj)
    return obj


# What the reconcile reads of a pod's or a claim's metadata.
KEPT_META = ("name", "namespace", "uid", "labels", "ownerReferences", "resourceVersion",
             "deletionTimestamp", "creationTimestamp")


def _slim_pod(pod: dict) -> dict:
    """What the reconcile reads of a pod (its server, node, phase, readiness, host address and
    containers' states); a pod's spec is most of its size and is the Deployment's, already
    cached."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    return {"metadata": {k: meta[k] for k in KEPT_META if k in meta},
            "spec": {"nodeName": (pod.get("spec") or {}).get("nodeName")},
            "status": {**{k: status[k] for k in ("phase", "conditions", "hostIP", "podIP",
                                                 "containerStatuses") if k in status},
                       **_slim_seed(status.get("initContainerStatuses"))}}


def _slim_seed(statuses: list | None) -> dict:
    """Of the init steps, the world's seed and how it ended (its message says what it did)."""
    kept = []
    for c in statuses or ():
        if c.get("name") != "seed":
            continue
        ends = {k: {"terminated": {f: (c[k]["terminated"]).get(f) for f in SEED_ENDED}}
                for k in ("state", "lastState") if (c.get(k) or {}).get("terminated")}
        kept.append({"name": "seed", **ends})
    return {"initContainerStatuses": kept} if kept else {}


SEED_ENDED = ("exitCode", "message", "finishedAt")


DEPLOYMENT_STATUS = ("replicas", "observedGeneration", "updatedReplicas", "readyReplicas",
                     "availableReplicas")


def _slim_deployment(dep: dict) -> dict:
    """A Deployment as the reconcile reads it: all of its spec (drift from what was applied is
    put back), of its status only the replica counts that make a server's phase. Updates of
    conditions alone are then no news."""
    status = dep.get("status") or {}
    return {**dep, "status": {k: status[k] for k in DEPLOYMENT_STATUS if k in status}}


CLAIM_ANNOTATIONS = (ANNOTATION_APPLIED, "peon.dev/recovered-from", "peon.dev/left-behind")


def _slim_claim(claim: dict) -> dict:
    """A claim as the reconcile reads it: what the operator applies (labels, its applied hash,
    access modes, size, class). The binder's annotations, volume name and status are no
    news for a server: without them a claim being bound queues no reconcile."""
    meta, spec = claim.get("metadata") or {}, claim.get("spec") or {}
    slim_meta = {k: meta[k] for k in KEPT_META if k in meta}
    # and what a lost node's recovery wrote on it (operator/lost_node.py)
    kept = {k: v for k, v in (meta.get("annotations") or {}).items() if k in CLAIM_ANNOTATIONS}
    if kept:
        slim_meta["annotations"] = kept
    return {"apiVersion": claim.get("apiVersion", "v1"), "kind": "PersistentVolumeClaim",
            "metadata": slim_meta,
            "spec": {k: spec[k] for k in ("accessModes", "resources", "storageClassName")
                     if k in spec}}



def _same_but_version(a: dict, b: dict) -> bool:
    """Do two versions of an object say the same, their resourceVersions aside?"""
    if a.keys() != b.keys():
        return False
    ma, mb = a.get("metadata") or {}, b.get("metadata") or {}
    return all(a[k] == b[k] for k in a if k != "metadata") and ma.keys() == mb.keys() and \
        all(ma[k] == mb[k] for k in ma if k != "resourceVersion")


def _slim_job(job: dict) -> dict:
    """A run's Job as the run reads it: who it is, how it went (its pod template is ours)."""
    return {k: job[k] for k in ("apiVersion", "kind", "metadata", "status") if k in job}


SLIM_CHILDREN = {"Deployment": _slim_deployment, "PersistentVolumeClaim": _slim_claim}


class ObjectStore(dict):
    """One kind's objects as the cache keeps them (the children's store: several kinds, keyed
    (kind, ns, name)): `keep` slims what a watch sent to what the reconcile reads, and its
    indexes move with every put."""

    def __init__(self, keep: Callable[[Any, dict], dict], *indexes: Index):
        super().__init__()
        self.keep, self.indexes = keep, indexes


def _kept(key, obj: dict) -> dict:
    return _slim(obj)


def _kept_child(key, obj: dict) -> dict:
    obj = _slim(obj)
    return SLIM_CHILDREN[key[0]](obj) if key[0] in SLIM_CHILDREN else obj


class Cache:
    def __init__(self) -> None:
        # the questions a reconcile asks, each an index of one store
        self.pods_by_server = Index(_server_pod)
        self.backups_by_server = Index(_run_server)
        self.restores_by_server = Index(_run_server)
        self.servers_by_game = Index(_game_uid)
        self.servers_by_secret = Index(_secret_refs)
        self.games_by_alias = Index(_aliases)
        self.gameservers = ObjectStore(_kept, self.servers_by_game, self.servers_by_secret)  # (ns, name)
        self.games = ObjectStore(_kept, self.games_by_alias)  # name
        self.children = ObjectStore(_kept_child)  # (kind, ns, name)
        self.pods = ObjectStore(lambda key, pod: _slim_pod(_slim(pod)), self.pods_by_server)
        self.backups = ObjectStore(_kept, self.backups_by_server)
        self.restores = ObjectStore(_kept, self.restores_by_server)
        self.jobs = ObjectStore(lambda key, job: _slim_job(_slim(job)))
        self.secrets: dict[tuple[str, str], SecretView] = {}  # users' Secrets, as views
        self._lock = threading.Lock()

    def size(self) -> int:
        """How many objects it holds, of every kind."""
        return sum(map(len, (self.gameservers, self.games, self.children, self.pods,
                             self.backups, self.restores, self.jobs, self.secrets)))

    def put(self, store: ObjectStore, key, obj: dict, deleted: bool) -> bool:
        """Keep `obj` unless the store holds a newer version. True when this is news: the
        object is new, newer or gone. The watch event of the operator's own write is not (the
        write's result was put first), and queues no reconcile: that reconcile already ran."""
        obj = store.keep(key, obj)
        with self._lock:
            old = store.get(key)
            if deleted:
                if old is None:
                    return False
                del store[key]
                new = None
            elif not at_least_as_new(old, obj):
                return False
            elif old is not None and _same_but_version(old, obj):
                # No news: the echo of a write whose answer was put, or a change the cache
                # slims away (a claim being bound, a rollout's conditions). What is kept stays,
                # at the newer version, and is not walked again by _shared (5% of the
                # operator's CPU samples while 1,000 servers came up, when every event paid it).
                if _version(old) != _version(obj):
                    store[key] = {**old, "metadata": {**old["metadata"],
                                                      "resourceVersion": _version(obj)}}
                return False
            else:
                store[key] = new = _shared(obj)
                if old is not None and _version(old) == _version(obj):
                    return False  # the same version: no news
            for index in store.indexes:
                index.move(key, old, new)
            return True

    def put_secret(self, ns: str, obj: dict, deleted: bool) -> bool:
        """Keep a user's Secret as a view. True when its keys or data changed, or it went."""
        key = (ns, obj["metadata"]["name"])
        with self._lock:  # the Secrets' stream and a reconcile's read of a missing one race
            if deleted:
                return self.secrets.pop(key, None) is not None
            view, old = SecretView.of(obj), self.secrets.get(key)
            if old is not None and not at_least(old.resource_version, view.resource_version):
                return False  # older than what is kept
            self.secrets[key] = view
            return old != view

    # --- questions, each answered from an index --------------------------------------------------

    def game(self, uid: str) -> dict | None:
        """The Game named `uid`, or the one that lists it among its aliases."""
        if uid in self.games:
            return self.games[uid]
        names = self.games_by_alias.get(uid)
        return self.games.get(names[0]) if names else None

    def pods_of(self, ns: str, gs_name: str) -> list[dict]:
        """The server's own pods (not its backup or restore Jobs' pods)."""
        return [p for k in self.pods_by_server.get((ns, gs_name))
                if (p := self.pods.get(k)) is not None]

    def runs_of(self, store: ObjectStore, ns: str, gs_name: str) -> list[dict]:
        """The server's GameServerBackups or GameServerRestores (`store` says which)."""
        index = self.backups_by_server if store is self.backups else self.restores_by_server
        return [r for k in index.get((ns, gs_name))
                if (r := store.get(k)) is not None]

    def gameservers_of_game(self, game: dict) -> list[Key]:
        out: list[Key] = []
        aliases = (game.get("spec") or {}).get("aliases") or []
        for uid in (game["metadata"]["name"], *aliases):
            out += [("GameServer", *k) for k in self.servers_by_game.get(uid)]
        return out

    def named_secrets(self) -> list[tuple[str, str]]:
        """Every (namespace, name) of a user's Secret that some server names."""
        return list(self.servers_by_secret.entries)

    def forget_secrets(self, named: set[tuple[str, str]]) -> None:
        """Drops the views of Secrets no server names any more."""
        with self._lock:
            for key in [k for k in self.secrets if k not in named]:
                del self.secrets[key]

    def gameservers_referencing_secret(self, ns: str, name: str) -> list[Key]:
        return [("GameServer", *k) for k in self.servers_by_secret.get((ns, name))]
