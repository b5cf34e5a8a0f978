"""kopf handlers: thin. They feed the watch streams into the controller's cache and queue;
the work is in controller.py. kopf watches the operator's own kinds and Jobs; the servers'
children, pods and Secrets come through streams of the operator's own (watches.py), whose
events go through `on_event` here."""
from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass

import kopf

from peon import GROUP, LABEL_GAMESERVER, LABEL_MANAGED_BY, MANAGED_BY, VERSION
from peon.shared.backup import FINISHED, LABEL_BACKUP, LABEL_RESTORE
from .controller import Controller
from .games import is_judged
from peon.shared.kube import Kube, load_config
from .leader import Election
from .namespaces import Scope
from . import health, watches
from peon.shared import metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    """The operator's settings, from the command line (main.py), handed to the handlers in
    kopf's memo (`memo.settings`); the running Controller is `memo.controller`."""
    workers: int = 8
    job_image: str | None = None
    namespaces: tuple[str, ...] = ()
    # kopf watches CRDs (new kinds) and namespaces (to match patterns). Peon's kinds exist
    # before it starts, and exact namespace names need no matching, so it does without both,
    # and without the permissions they take, unless a namespace pattern such as `games-*` is given.
    scan_cluster: bool = False
    # (Lease name, namespace) when several replicas run; None runs alone.
    leader_election: tuple[str, str] | None = None
    # How often each user's Secret that a server names is read again (secret_refs.py): a
    # changed password rolls its servers within this many seconds.
    secret_refresh: float = 30.0
    # The networks webhooks may reach though they are loopback, private or link-local
    # (--notify-allow-cidr; notify.allowed_networks).
    notify_allowed: tuple = ()
    # How often each server's store is listed for backups made elsewhere (store_listing.py).
    store_list_interval: float = 3600.0


class NoDiffBase(kopf.DiffBaseStorage):
    """No essence kept. kopf builds one for every watch event (a deep copy of the object) to
    tell what changed for create/update handlers; Peon registers only event handlers and
    compares with its own cache, so the copy was pure cost: 14% of the operator's CPU samples
    while 500 servers came up (py-spy on bench/converge.py), 18% with the rest of kopf's cause
    detection."""

    def build(self, *, body, extra_fields=None):
        return kopf.BodyEssence()

    def fetch(self, *, body):
        return None

    def store(self, *, body, patch, essence):
        pass


@kopf.on.login()
def login(settings: kopf.OperatorSettings, **kwargs):
    """kopf's client login tries the service account before KUBECONFIG; with KUBECONFIG set,
    ours follows client-go (kube.load_config), so watches and writes reach the same API."""
    if not os.environ.get("KUBECONFIG"):
        return kopf.login_via_client(settings=settings, **kwargs)
    import kubernetes
    cfg = kubernetes.client.Configuration()
    load_config(cfg)
    header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix("authorization")
    scheme, _, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=cfg.host, ca_path=cfg.ssl_ca_cert, insecure=not cfg.verify_ssl,
        username=cfg.username or None, password=cfg.password or None,
        scheme=scheme or None, token=token or None,
        certificate_path=cfg.cert_file, private_key_path=cfg.key_file,
        # trust_env (proxies from the environment) came with kopf 1.38's networking settings.
        **({"trust_env": settings.networking.trust_env}
           if hasattr(settings.networking, "trust_env") else {}))


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_):
    config: Settings = memo.settings
    for reflector in getattr(memo, "watches", None) or ():  # a start kopf tries again
        reflector.stop()
    if getattr(memo, "secret_refresher", None):
        memo.secret_refresher.stop()
    # Only event-watching handlers are registered, so kopf itself writes nothing to GameServers
    # (no progress annotations, no finalizers); Events are the controller's own.
    settings.posting.enabled = False
    settings.persistence.diffbase_storage = NoDiffBase()
    # kopf keeps a task per object for this long after its last event. While 1,000 servers
    # come up that is thousands of idle tasks at once (5 s by default), a large part of the
    # operator's peak memory; a new event simply starts a new one.
    settings.batching.idle_timeout = 0.5
    settings.scanning.disabled = not config.scan_cluster
    settings.watching.server_timeout = 600
    settings.networking.request_timeout = 60
    kube = Kube()
    kube.post_events_in_background()  # a reconcile never waits on an Event's POST
    controller = memo.controller = Controller(
        kube, workers=config.workers, whole_cluster=not config.namespaces,
        notify_allowed=config.notify_allowed, store_list_interval=config.store_list_interval,
        **({"job_image": config.job_image} if config.job_image else {}))
    memo.election = None
    loop = asyncio.get_running_loop()
    controller.queue.bind(loop)  # the streams' threads queue too
    served = Scope(config.namespaces)
    # The streams' first lists fill the cache with the children and pods; then kopf's kinds
    # are listed and everything is queued once. Each kind is listed once at a start.
    memo.watches = watches.start(kube, watches.streams_for(served),
                                 lambda kind: on_event(controller, kind),
                                 lambda kind: lambda: cached(controller, kind))
    await loop.run_in_executor(None, watches.wait_synced, memo.watches)
    await loop.run_in_executor(None, controller.prime, served)
    memo.secret_refresher = controller.secret_refresher(config.secret_refresh)
    memo.secret_refresher.start()
    # A follower keeps its cache current from the watches and queues what they show; only the
    # leader's workers take from the queue.
    if config.leader_election:
        memo.election = Election(kube, *config.leader_election,
                                 on_leading=lambda: loop.call_soon_threadsafe(controller.start))
        memo.election.start()
    else:
        metrics.LEADING.set(1)
        controller.start()


@kopf.on.probe(id="stuck")
def liveness(memo: kopf.Memo, **_):
    """kopf's liveness endpoint (--liveness): a stuck stream or reconcile fails it (HTTP 500)
    and the kubelet restarts the operator; otherwise it answers how many streams and
    reconciles it looked at."""
    controller = getattr(memo, "controller", None)
    streams = watches.progress(getattr(memo, "watches", None) or [])
    workers = controller.workers_progress() if controller else []
    problems = health.stuck(streams, workers, time.monotonic())
    if problems:
        log.error("liveness: %s", "; ".join(problems))
        raise kopf.PermanentError("; ".join(problems))
    return {"streams": len(streams), "reconciling": len(workers)}


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_):
    for reflector in getattr(memo, "watches", None) or ():
        reflector.stop()
    if getattr(memo, "secret_refresher", None):
        memo.secret_refresher.stop()
    if getattr(memo, "controller", None):
        await memo.controller.stop()
    if getattr(memo, "election", None):
        await asyncio.get_running_loop().run_in_executor(None, memo.election.release)


def _deleted(event) -> bool:
    return event.get("type") == "DELETED"


@kopf.on.event(GROUP, VERSION, "gameservers")
async def gameserver_event(event, body, namespace, name, memo, **_):
    controller: Controller = memo.controller
    if not controller.cache.put(controller.cache.gameservers, (namespace, name), dict(body),
                                _deleted(event)):
        return  # the echo of the operator's own write (its status), or nothing newer
    controller.queue.add(("GameServer", namespace, name))
    game = controller.cache.game((body.get("spec") or {}).get("gameUid", ""))
    if game is not None and not is_judged(game):  # a namespaced operator judges the Games it uses
        controller.queue.add(("Game", "", game["metadata"]["name"]))


@kopf.on.event(GROUP, VERSION, "games")
async def game_event(event, body, name, memo, **_):
    controller: Controller = memo.controller
    if not controller.cache.put(controller.cache.games, name, dict(body), _deleted(event)):
        return
    if not _deleted(event):
        controller.queue.add(("Game", "", name))
    for key in controller.cache.gameservers_of_game(body):
        controller.queue.add(key)


def on_event(controller: Controller, kind: str) -> watches.OnEvent:
    """What an event of a watched kind (watches.WATCHED) does: it goes into the cache, and
    news wakes the server it concerns. Called on the kind's stream thread."""
    if kind == "Pod":
        return lambda type_, obj: pod_event(controller, type_, obj)
    return lambda type_, obj: child_event(controller, kind, type_, obj)


def cached(controller: Controller, kind: str) -> dict[tuple[str, str], dict]:
    """What the cache holds of a watched kind, by (namespace, name): a new list reports
    deleted what it lacks."""
    if kind == "Pod":
        return dict(list(controller.cache.pods.items()))
    return {(ns, name): obj for (k, ns, name), obj in list(controller.cache.children.items())
            if k == kind}


def child_event(controller: Controller, kind: str, type_: str, obj: dict) -> None:
    meta = obj["metadata"]
    owner = (meta.get("labels") or {}).get(LABEL_GAMESERVER)
    news = controller.cache.put(controller.cache.children, (kind, meta["namespace"], meta["name"]),
                                obj, type_ == "DELETED")
    if owner and news:
        controller.queue.add(("GameServer", meta["namespace"], owner))


def pod_event(controller: Controller, type_: str, obj: dict) -> None:
    meta = obj["metadata"]
    namespace, labels = meta["namespace"], meta.get("labels") or {}
    if LABEL_GAMESERVER not in labels or not controller.cache.put(
            controller.cache.pods, (namespace, meta["name"]), obj, type_ == "DELETED"):
        return
    controller.queue.add(("GameServer", namespace, labels[LABEL_GAMESERVER]))
    for label, kind in ((LABEL_RESTORE, "GameServerRestore"), (LABEL_BACKUP, "GameServerBackup")):
        if label in labels:  # a run waits for the server's pods to go
            controller.queue.add((kind, namespace, labels[label]))
    for key in _restores_waiting_for(controller, namespace, labels[LABEL_GAMESERVER]):
        controller.queue.add(key)


def _restores_waiting_for(controller: Controller, ns: str, gs: str):
    return [("GameServerRestore", ns, r["metadata"]["name"])
            for r in controller.cache.runs_of(controller.cache.restores, ns, gs)
            if (r.get("status") or {}).get("phase") not in FINISHED]


def _run_event(store_name: str, kind: str):
    async def handler(event, body, namespace, name, memo, **_):
        controller: Controller = memo.controller
        # Every event, the echoes of the operator's own writes too: a run's status written by
        # its reconciler is what wakes its server (update and restore holds).
        controller.cache.put(getattr(controller.cache, store_name), (namespace, name), dict(body),
                             _deleted(event))
        controller.queue.add((kind, namespace, name))
        gs = (body.get("spec") or {}).get("gameServer")
        if gs:  # the server's status, update hold and restore hold follow its runs
            controller.queue.add(("GameServer", namespace, gs))
            if kind == "GameServerBackup":  # a restore may wait for this backup to finish
                for key in _restores_waiting_for(controller, namespace, gs):
                    controller.queue.add(key)
    return handler


kopf.on.event(GROUP, VERSION, "gameserverbackups", id="backup")(
    _run_event("backups", "GameServerBackup"))
kopf.on.event(GROUP, VERSION, "gameserverrestores", id="restore")(
    _run_event("restores", "GameServerRestore"))


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY}, id="job")
async def job_event(event, body, namespace, name, memo, **_):
    controller: Controller = memo.controller
    controller.cache.put(controller.cache.jobs, (namespace, name), dict(body), _deleted(event))
    labels = body["metadata"].get("labels") or {}
    for label, kind in ((LABEL_BACKUP, "GameServerBackup"), (LABEL_RESTORE, "GameServerRestore")):
        if label in labels:
            controller.queue.add((kind, namespace, labels[label]))
