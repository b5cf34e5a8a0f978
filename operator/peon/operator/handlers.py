"""kopf handlers: thin. The start (the streams, their first lists, the prime, the workers), the
liveness probe, the stop; and kopf's event handlers, one per kind that kopf watches in the table
of watched kinds (kinds.py), each calling the kind's event function (events.py) as the
operator's own streams (watches.py) do. The work is in controller.py."""
from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass

import kopf

from .controller import Controller
from peon.shared.kube import Kube, load_config
from .leader import Election
from .namespaces import Scope
from .wake import Config as WakeConfig
from . import health, kinds, watches
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
    # Where the wake gate runs and the ports it may bind (--gate-*; wake.py); None: no gate.
    gate: WakeConfig | None = None


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
        gate=config.gate,
        **({"job_image": config.job_image} if config.job_image else {}))
    memo.election = None
    loop = asyncio.get_running_loop()
    controller.queue.bind(loop)  # the streams' threads queue too
    served = Scope(config.namespaces)
    # The streams' first lists fill the cache with the children and pods; then kopf's kinds
    # are listed and everything is queued once. Each kind is listed once at a start.
    streams = watches.streams_for(served)
    memo.watches = watches.start(kube.apart(len(streams)), streams,
                                 lambda kind: on_event(controller, kind),
                                 lambda kind: lambda: cached(controller, kind))
    await loop.run_in_executor(None, watches.wait_synced, memo.watches)
    await loop.run_in_executor(None, controller.prime, served)
    # What the first lists put in the cache mostly stays; each full collection would walk it.
    controller.freezer.freeze(controller.cache.size())
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


def _kopf_handler(watched: kinds.Watched):
    """kopf's event handler for a kind of the table: its event function, as a stream calls it."""
    async def handler(event, body, memo, **_):
        watched.on_event(memo.controller, watched.kind, event.get("type"), dict(body))
    handler.__name__ = handler.__qualname__ = f"{watched.kind.lower()}_event"
    return handler


def _kopf_labels(selector: str | None) -> dict | None:
    """A label selector as kopf's filter: `k=v`, or `k` (present)."""
    if not selector:
        return None
    key, _, value = selector.partition("=")
    return {key: value if value else kopf.PRESENT}


KOPF_HANDLERS = {}
for _watched in kinds.watched_by(kinds.KOPF):
    KOPF_HANDLERS[_watched.kind] = kopf.on.event(
        *_watched.group_version, _watched.plural, id=_watched.kind.lower(),
        labels=_kopf_labels(_watched.selector))(_kopf_handler(_watched))


def on_event(controller: Controller, kind: str) -> watches.OnEvent:
    """A stream's event function for `kind` (kinds.WATCHED's): called on the kind's stream
    thread with (type_, obj)."""
    fn = kinds.BY_KIND[kind].on_event
    return lambda type_, obj: fn(controller, kind, type_, obj)


def cached(controller: Controller, kind: str) -> dict[tuple[str, str], dict]:
    return kinds.cached_of(controller.cache, kind)
