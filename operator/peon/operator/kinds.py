"""Every kind the operator watches, one row each: who watches it, the selector the API server
applies, the cache's store that keeps it (and so what is kept: cache.py's slims), and what an
event of it does (events.py). The streams (watches.py), kopf's registration (handlers.py), the
start's list of kopf's kinds and the first look at everything (controller.prime) and the
forgetting of a gone namespace's objects all read this table.

Who watches what, and why (docs/design.md, "Watches"): kopf, the operator's framework, watches
the custom resources and Jobs, whose events are few; the operator's own list-and-watch streams
(watches.py: a thread per kind, as client-go's reflector) take the servers' children, pods and
Secrets, most of the events while servers come up, at a third of kopf's CPU per event."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from peon import LABEL_GAMESERVER, LABEL_MANAGED_BY, MANAGED_BY
from peon.shared.kube import KINDS as API_KINDS

from . import events

KOPF, STREAM = "kopf", "stream"
MANAGED = f"{LABEL_MANAGED_BY}={MANAGED_BY}"

# (controller, kind, type_, obj): events.py's functions
OnEvent = Callable[[Any, str, "str | None", dict], None]


@dataclass(frozen=True)
class Watched:
    kind: str
    watcher: str             # KOPF or STREAM
    selector: str | None     # the API server applies it: other objects' events never arrive
    store: str               # the Cache's attribute that keeps it
    on_event: OnEvent
    reconciled: bool = False  # it has a reconciler: each one is looked at once after a start

    @property
    def cluster_scoped(self) -> bool:
        return not API_KINDS[self.kind][2]

    @property
    def plural(self) -> str:
        return API_KINDS[self.kind][1]

    @property
    def group_version(self) -> tuple[str, str]:
        """("peon.dev", "v1alpha1"), ("apps", "v1"), ("", "v1"): as kopf names a resource."""
        parts = API_KINDS[self.kind][0].strip("/").split("/")
        return ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])


WATCHED: tuple[Watched, ...] = (
    Watched("Game", KOPF, None, "games", events.game_event, reconciled=True),
    Watched("GameServer", KOPF, None, "gameservers", events.gameserver_event, reconciled=True),
    Watched("GameServerBackup", KOPF, None, "backups", events.run_event, reconciled=True),
    Watched("GameServerRestore", KOPF, None, "restores", events.run_event, reconciled=True),
    Watched("Job", KOPF, MANAGED, "jobs", events.job_event),
    Watched("Deployment", STREAM, MANAGED, "children", events.child_event),
    Watched("Service", STREAM, MANAGED, "children", events.child_event),
    Watched("ConfigMap", STREAM, MANAGED, "children", events.child_event),
    Watched("PersistentVolumeClaim", STREAM, MANAGED, "children", events.child_event),
    # Only the operator's own: the users' Secrets that servers name are read by name
    # (secret_refs.py), so no other Secret (a service account's token) ever reaches it.
    Watched("Secret", STREAM, MANAGED, "children", events.child_event),
    Watched("Pod", STREAM, LABEL_GAMESERVER, "pods", events.pod_event),
)

BY_KIND = {w.kind: w for w in WATCHED}


def watched_by(watcher: str) -> tuple[Watched, ...]:
    return tuple(w for w in WATCHED if w.watcher == watcher)


def reconciled() -> tuple[Watched, ...]:
    return tuple(w for w in WATCHED if w.reconciled)


def cached_of(cache: Any, kind: str) -> dict[tuple[str, str], dict]:
    """What the cache holds of `kind`, by (namespace, name) (a stream's new list reports
    deleted what it lacks). The children's store keys by (kind, namespace, name)."""
    store = getattr(cache, BY_KIND[kind].store)
    if store is getattr(cache, "children"):
        return {(ns, name): obj for (k, ns, name), obj in list(store.items()) if k == kind}
    return dict(list(store.items()))
