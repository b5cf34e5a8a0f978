"""The reconcile loop: from a GameServer to its children, in one obvious path.

The watch streams (kopf's and watches.py, through handlers.py) feed `Cache`; every event that
concerns a GameServer puts its key on `WorkQueue`; workers run `Controller.reconcile(key)`,
which

    parses the GameServer and its Game (model) → renders the children (render)
    → applies only those that differ from what the cache holds (kube) → writes status if it changed.

Level-triggered and idempotent: a missed event is healed by the next, a deleted or edited child
comes back, and when nothing changed nothing is written.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from kubernetes.client.rest import ApiException
from kubernetes.utils import parse_quantity

from peon import ANNOTATION_APPLIED, __version__
from peon.shared import clock, metrics, notify as nt, status as st
from peon.shared.backup import STORE_SECRET_KEYS, Store
from .cache import Cache, Key, SecretView, digest
from . import kinds
from .games import GameReconciler
from .health import Progress
from peon.shared.kube import Kube, refusal, with_kind
from .namespaces import Scope
from peon.shared.model import STATE_STOPPED, InvalidSpec, is_env_name, parse_game, parse_gameserver
from peon.shared.render import ReferencedSecrets, child_names, claim_name, first_build_order, render
from .log_players import api_read_log
from .prober import Prober
from .backup_reconciler import BackupReconciler
from .restore_reconciler import RestoreReconciler
from .runs import ServerRuns, claim_refusal
from .secret_refs import SecretRefresher
from .sessions import Sessions, transition_event
from .maintenance import Maintenance
from .lost_node import LostNodes, on_claim
from .heap import Freezer
from .store_listing import KIND as STORE_LISTING, StoreListing, StoreTurns
from .workqueue import WorkQueue
from .wake import Config as WakeConfig, Wake

log = logging.getLogger(__name__)

# Backup and restore Jobs run `peon archive` from the operator's own image.
DEFAULT_JOB_IMAGE = f"ghcr.io/peon-dev/peon-operator:{__version__}"


def is_subset(want: Any, have: Any) -> bool:
    """Does `have` (what the server holds, with defaults filled in) already say all of `want`?"""
    if isinstance(want, dict):
        # The API server omits empty values ("", false, 0, [], {}) when it serialises.
        return isinstance(have, dict) and all(is_subset(v, have[k]) if k in have else not v
                                              for k, v in want.items())
    if isinstance(want, list):
        return (isinstance(have, list) and len(want) == len(have)
                and all(is_subset(w, h) for w, h in zip(want, have)))
    if isinstance(want, (int, float)) and isinstance(have, str) or \
            isinstance(have, (int, float)) and isinstance(want, str):
        return str(want) == str(have)
    return want == have


SERVICE_ACCOUNT_TOKEN = "kubernetes.io/service-account-token"


def refuse_token_secret(view: SecretView, what: str) -> None:
    """A service account's token never goes into a game's pod or a backup Job, whoever asks:
    it would give the image the account's rights."""
    if view.type == SERVICE_ACCOUNT_TOKEN:
        raise InvalidSpec("SecretNotAllowed", f"{what} holds a service account's token "
                          f"(type {SERVICE_ACCOUNT_TOKEN}); Peon never puts one into a pod")


class Controller:
    def __init__(self, kube: Kube, workers: int = 8, job_image: str = DEFAULT_JOB_IMAGE,
                 whole_cluster: bool = True, notify_allowed: tuple = (),
                 store_list_interval: float = 3600.0, gate: WakeConfig | None = None):
        self.kube = kube
        self.cache = Cache()
        self.freezer = Freezer()  # the cache out of the garbage collector's walks (heap.py)
        self.queue = WorkQueue()
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile")
        self._applied: dict[tuple[str, str, str], tuple[str, str]] = {}  # key -> (hash, rv)
        # server key -> (digest of the children asked for, the API server's refusal of them)
        self._refused: dict[Key, tuple[str, str]] = {}
        self._failures: dict[Key, int] = {}
        self._tasks: list[asyncio.Task] = []
        self.reconciling: dict[int, tuple[Key, float]] = {}  # worker -> (key, since): health.py
        self.phases: dict[Key, str] = {}  # last phase seen of every GameServer, for metrics
        metrics.count_servers(self.phases)
        metrics.OFFSITE_AGES.watch(self.cache.gameservers, clock.now)
        self._transitional: dict[Key, float] = {}  # since when a server's phase is on its way
        self.runs = ServerRuns(kube, self.cache, self.queue, job_image)  # the GameServer's side
        turns = StoreTurns()  # a server's listing and store backups take turns
        self.backups = BackupReconciler(kube, self.cache, self.queue, job_image, turns)
        self.restores = RestoreReconciler(kube, self.cache, self.queue, job_image)
        # snapshots in a server's store with no backup object (a former cluster's)
        self.listing = StoreListing(kube, self.cache, self.queue, job_image, store_list_interval,
                                    turns=turns)
        self.prober = Prober(lambda key: self.queue.add(("GameServer", *key)),
                             read_log=api_read_log(kube))  # a Game's log lines (query log)
        self.sessions = Sessions(self.cache, self.prober)
        self.maintenance = Maintenance(kube, self.cache, self.runs)  # changes that wait for players
        self.games = GameReconciler(kube, self.cache, whole_cluster)
        self.notifier = nt.Notifier(
            self.webhook_url, lambda obj, msg: self.kube.event(obj, "Warning", "NotifyFailed", msg),
            allowed=notify_allowed)
        self.backups.notify = self.notify
        self.wake = Wake(kube, self.cache, lambda keys: [self.queue.add(k) for k in keys],
                         gate or WakeConfig())
        self.lost = LostNodes(kube, self.cache)  # a lost node's server moves (issue 26, item 3)

    # --- the loop --------------------------------------------------------------------------------

    def prime(self, served: Scope) -> None:
        """List kopf's kinds (kinds.py) before any reconcile runs: a GameServer must never be
        judged before its Game is known (a false UnknownGame). The streams' kinds are not listed
        here: their streams' first lists fill the cache, and the start waits for them
        (watches.wait_synced) before this, so a child is never re-applied because its event had
        not arrived yet, and each kind is listed once. A pattern (`t-*`, `!t-skip`) lists
        cluster-wide and keeps what it serves."""
        for w in kinds.watched_by(kinds.KOPF):
            store = getattr(self.cache, w.store)
            for scope in ([None] if w.cluster_scoped else served.list_scopes()):
                for obj in self.kube.list(w.kind, scope, w.selector):
                    m = obj["metadata"]
                    if w.cluster_scoped:
                        self.cache.put(store, m["name"], with_kind(obj, w.kind), False)
                    elif served.wants(m.get("namespace")):
                        self.cache.put(store, (m["namespace"], m["name"]), with_kind(obj, w.kind), False)
        # Every object is looked at once after a start: kopf's first events repeat what was
        # just listed, and only news queues a reconcile.
        self.queue_everything()

    def queue_everything(self) -> None:
        for w in kinds.reconciled():
            for key in list(getattr(self.cache, w.store)):
                self.queue.add((w.kind, "", key) if w.cluster_scoped else (w.kind, *key))

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker(i)) for i in range(self.workers)]
        self.prober.start()
        self.notifier.start()
        self.wake.start()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.prober.stop()
        await self.notifier.stop()
        self.wake.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _worker(self, worker: int = 0) -> None:
        loop = asyncio.get_running_loop()
        while True:
            key = await self.queue.get()
            started = time.monotonic()
            self.reconciling[worker] = (key, started)
            try:
                requeue = await loop.run_in_executor(self._executor, self.reconcile, key)
                self.freezer.note(self.cache.size())
                metrics.RECONCILES.labels("ok").inc()
                self._failures.pop(key, None)
                if requeue:
                    self.queue.add_after(key, requeue)
            except Exception as e:
                metrics.RECONCILES.labels("error").inc()
                if _namespace_terminating(e):
                    log.debug("%s %s/%s: namespace is terminating; leaving it be", *key)
                    continue
                if _namespace_gone(e):
                    # Its namespace is gone, so it is too: a watch of a namespace pattern
                    # (kopf's) ends with the namespace and may not tell its objects' deletion.
                    log.debug("%s %s/%s: namespace is gone; forgetting it", *key)
                    self.forget(key)
                    continue
                # Transient: back off per key, exponentially, so a broken API is never stormed.
                n_fail = self._failures[key] = self._failures.get(key, 0) + 1
                delay = min(60.0, 0.5 * 2 ** n_fail) * (0.8 + 0.4 * random.random())
                log.warning("reconcile %s %s/%s failed (%s); retrying in %.1fs", *key, _brief(e), delay)
                self.queue.add_after(key, delay)
            finally:
                self.reconciling.pop(worker, None)
                metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
                self.queue.done(key)

    def workers_progress(self) -> list[Progress]:
        """The reconciles running now, as the liveness probe sees them."""
        return [Progress("/".join(key), True, since)
                for key, since in list(self.reconciling.values())]

    def forget(self, key: Key) -> None:
        """Drop an object whose namespace is gone from the cache: nothing will reconcile it."""
        kind, ns, name = key
        watched = kinds.BY_KIND.get(kind)
        store = getattr(self.cache, watched.store) if watched and not watched.cluster_scoped else None
        obj = store.get((ns, name)) if store is not None else None
        if obj is not None:
            self.cache.put(store, (ns, name), obj, True)
        if kind == "GameServer":
            self.forget_server(key)

    def forget_server(self, key: Key) -> None:
        """What the controller keeps of a server that is gone (in memory only)."""
        self.phases.pop(key, None)
        self._transitional.pop(key, None)
        self._refused.pop(key, None)
        self.sessions.forget(key[1], key[2])
        self.wake.forget(key[1:])
        self.lost.forget(key[1], key[2])

    # --- one reconcile ---------------------------------------------------------------------------

    def reconcile(self, key: Key) -> float | None:
        """One reconcile of one object. Returns seconds after which to look again, or None."""
        kind, ns, name = key
        if kind == "GameServerBackup":
            return self.backups.reconcile(ns, name)
        if kind == "GameServerRestore":
            return self.restores.reconcile(ns, name)
        if kind == STORE_LISTING:
            return self.listing.reconcile(ns, name)
        if kind == "Game":
            return self.games.reconcile(name)
        return self.reconcile_gameserver(ns, name)

    def reconcile_gameserver(self, ns: str, name: str) -> float | None:
        """Bring one GameServer's children and status to what its spec says."""
        key = ("GameServer", ns, name)
        body = self.cache.gameservers.get((ns, name))
        if body is None or body["metadata"].get("deletionTimestamp"):
            self.forget_server(key)
            if body is not None:
                self.runs.before_eradication(body)
            return None  # owner references let the garbage collector remove the children
        try:
            gs = parse_gameserver(body)
            game_obj = self.cache.game(gs.game_uid)
            if game_obj is None:
                raise InvalidSpec("UnknownGame", f"no Game named {gs.game_uid!r} in the catalogue "
                                  "(kubectl get games lists them)")
            game = parse_game(game_obj)
            secrets = self.referenced_secrets(ns, gs.secret_refs)
            refused_claim = claim_refusal(self.cache, body)
            if refused_claim:
                raise InvalidSpec("ClaimNotAllowed", refused_claim)
            if gs.backup.store is not None:
                self.check_store_secret(ns, gs.backup.store)
                self.listing.note(ns, name)
            self.runs.ensure_finalizer(body, gs)
            image, updated = self.runs.backup_before_update(body, gs, gs.image or game.image)
            restore = self.runs.restoring(ns, name)
            body, knock = self.wake.knocked(body, gs, bool(((body.get("status") or {}).get(
                "uptime") or {}).get("running")))  # the gate's knock: a start, as the API's
            decision, uptime_status, players_status, uptime_requeue = self.sessions.decide(
                body, gs, game)
            holding = self.runs.backup_before_stop(body, gs, decision.run, decision.reason)
            running = (decision.run or holding is not None) and restore is None
            lost = self.lost.judge(body, gs, claim_name(gs))
            desired = render(replace(gs, image=image, backup=lost.seeding(gs.backup)), game,
                             secrets, running=running, helper_image=self.runs.job_image)
            if lost.recovered:
                desired = on_claim(desired, lost.claim)
            held = self.maintenance.judge(body, gs, game, desired, self.sessions.players_now(gs))
            desired, gate = self.wake.stand_in(body, gs, game, desired, running)
        except InvalidSpec as e:
            self.stop_when_asked(body)
            self.write_status(body, invalid=e)
            return None
        first_build = self.is_first_build(ns, desired)
        refused = self.refused_before(key, desired)
        changed: list[str] = []
        if refused is None:
            changed, refused = self.build(ns, name, desired, first_build)
            self.remember_refusal(key, desired, refused)
        if refused:
            # A child the API server refuses is a spec problem: say it, and wait for a change
            # (an edit of the GameServer or its Game queues it again), no retry loop.
            self.stop_when_asked(body)
            self.write_status(body, invalid=InvalidSpec("Rejected", refused))
            return None
        changed += [f"-{k}" for k in self.remove_unwanted(ns, name, {d["kind"] for d in desired} | held.kept)]
        self.wake.point(body, gs, gate)  # the slice to the gate, after its Service
        self.lost.evict(ns, lost.evict)  # after the Deployment moved to the new claim
        if changed and not first_build:  # a new server's children are its status' to tell
            self.kube.event(body, "Normal", "Applied", f"applied {', '.join(changed)}")
        requeue, backup_status = self.runs.schedule_and_retain(body, gs.backup)
        why_stopped = (f"restoring backup {restore['spec']['backup']} ({restore['metadata']['name']})"
                       if restore else None)
        if not why_stopped and not decision.run and decision.reason != "Stopped":
            why_stopped = f"{decision.message} ({decision.reason})"
        if holding:  # still up, and still in the session whose backup is being taken
            session = ((body.get("status") or {}).get("uptime") or {}).get("sessionStart")
            uptime_status = {**uptime_status, "running": True, "message": holding,
                             "sessionStart": session}
        event = transition_event((body.get("status") or {}).get("uptime"), uptime_status)
        settle = self.write_status(body, built=st.Built(
            game_uid=game.uid, image=image, want_running=running, host_ports=gs.network.host_ports,
            ports=[{"name": p.name, "containerPort": p.container_port, "protocol": p.protocol}
                   for p in game.ports],
            extra=(held.updated if held.updated and updated["status"] == "True" else updated,
                   *held.conditions, *filter(None, [lost.condition])), backup=backup_status,
            why_stopped=why_stopped,
            more={"uptime": uptime_status, "players": players_status, "maintenance": held.status, "gate": gate,
                  "lastKnock": knock, "recovery": lost.status}))
        # Said once, with the status that records it: while a transitional phase is held back
        # every look would otherwise post the same start or stop again.
        written = (self.cache.gameservers.get((gs.namespace, gs.name)) or {}).get("status") or {}
        if event and not st.status_differs(written, {"uptime": uptime_status}):
            self.kube.event(body, "Normal", *event)
        if gs.notify:  # most servers tell no one: nothing to compare
            self.notify(body, gs.notify, nt.messages(name, body.get("status"), written))
        return min(filter(None, [requeue, uptime_requeue, settle, held.requeue, lost.requeue]),
                   default=None)

    def notify(self, body: dict, policy: nt.Policy | None, messages: list[nt.Message]) -> None:
        """Queue the server's messages for its webhook (never waits on it)."""
        if policy is None:
            return
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        for m in messages:
            if m.event in policy.events:
                self.notifier.tell(nt.Outgoing(ns, name, policy.secret,
                                               nt.body(policy.format, ns, name, m), involved=body))

    def webhook_url(self, ns: str, secret: str) -> str | None:
        return nt.url_from_secret(self.kube.get("Secret", ns, secret))

    def referenced_secrets(self, ns: str, names: tuple[str, ...]) -> ReferencedSecrets:
        """The users' Secrets named by secretRef, from the cache (Secrets are watched). One the
        cache lacks is read once: applied together with its server, its event may come second."""
        keys, digests = {}, {}
        for n in names:
            view = self.secret_view(ns, n)
            if view is None:
                raise InvalidSpec("SecretNotFound", f"Secret {n!r} named by secretRef does not "
                                  f"exist in namespace {ns}")
            refuse_token_secret(view, f"Secret {n!r} named by secretRef")
            bad = [k for k in view.keys if not is_env_name(k)]
            if bad:
                raise InvalidSpec("InvalidSetting", f"Secret {n!r} has keys that are not variable "
                                  f"names: {', '.join(sorted(bad))}")
            keys[n] = view.keys
            digests[n] = view.digest
        return ReferencedSecrets(keys, digests)

    def secret_view(self, ns: str, name: str) -> SecretView | None:
        """A Secret a server names, as the cache keeps it; read when the cache lacks it."""
        if (ns, name) not in self.cache.secrets:
            self.read_secret((ns, name), fresh=True)
        return self.cache.secrets.get((ns, name))

    def read_secret(self, key: tuple[str, str], fresh: bool = False) -> bool:
        """Reads a user's Secret by name into the cache. True when that is news (new, changed
        or gone). The refresher's reads come from the API server's watch cache (a moment's
        staleness is read again in the next round); a reconcile that lacks one reads it fresh,
        as it may have been made a moment ago, with its server."""
        ns, name = key
        secret = self.kube.get("Secret", ns, name, resource_version=None if fresh else "0")
        if secret is None:
            return self.cache.put_secret(ns, {"metadata": {"name": name}}, True)
        return self.cache.put_secret(ns, secret, False)

    def secret_changed(self, key: tuple[str, str]) -> None:
        """A Secret servers name changed or went: they are judged again (and roll)."""
        for server in self.cache.gameservers_referencing_secret(*key):
            self.queue.add(server)

    def secret_refresher(self, interval: float) -> SecretRefresher:
        return SecretRefresher(self.cache.named_secrets, self.read_secret, self.secret_changed,
                               self.cache.forget_secrets, interval=interval)

    def check_store_secret(self, ns: str, store: Store) -> None:
        """The off-site store's Secret exists and holds the keys a backup Job will need: a
        missing one is said now, not by every backup failing later."""
        view = self.secret_view(ns, store.secret)
        if view is None:
            raise InvalidSpec("InvalidBackupStore", f"spec.backup.store.secretRef: Secret "
                              f"{store.secret!r} does not exist in namespace {ns}")
        refuse_token_secret(view, f"spec.backup.store.secretRef: Secret {store.secret!r}")
        missing = [k for k in STORE_SECRET_KEYS if k not in view.keys]
        if missing:
            raise InvalidSpec("InvalidBackupStore", f"spec.backup.store.secretRef: Secret "
                              f"{store.secret!r} lacks {', '.join(missing)}")

    def is_first_build(self, ns: str, desired: list[dict]) -> bool:
        """Is the last child of a first build (the world's claim; with an existing claim, the
        Deployment) not made yet? Until it is, the server was never whole."""
        last = first_build_order(desired)[-1]
        return (last["kind"], ns, last["metadata"]["name"]) not in self.cache.children

    def build(self, ns: str, name: str, desired: list[dict], first: bool) -> tuple[list[str], str | None]:
        """Apply the children that differ. Returns the kinds written and the API server's
        refusal, if one refused; transient errors raise. A server's first build makes what the
        operator can delete again first and the world's claim last (first_build_order); when
        the API server refuses one, what was made is deleted again, so a refused first build
        leaves nothing: no half-built server, and no claim, which the operator may not delete.
        Each create is its own try: no dry runs (they cost the API server as much again)."""
        order = first_build_order(desired) if first else desired
        changed: list[str] = []
        for d in order:
            try:
                if self.ensure(d):
                    changed.append(d["kind"])
            except ApiException as e:
                refused = refusal(e, d)
                if refused is None:
                    raise  # transient: the worker backs off and tries again
                if first:
                    self.take_back(ns, name, order)
                return changed, refused
        return changed, None

    def refused_before(self, key: Key, desired: list[dict]) -> str | None:
        """The API server's refusal when it refused these very children last time. Not asked
        again until something changes (the spec, its Game, a Secret): a refused first build is
        taken back, and the watch events of that would otherwise build and take back forever."""
        memo = self._refused.get(key)
        return memo[1] if memo is not None and memo[0] == digest(desired) else None

    def remember_refusal(self, key: Key, desired: list[dict], refused: str | None) -> None:
        if refused is None:
            self._refused.pop(key, None)
        else:
            self._refused[key] = (digest(desired), refused)

    def take_back(self, ns: str, name: str, children: list[dict]) -> None:
        """Delete the children of a refused first build that exist (never a claim). A delete
        that fails raises: the retry builds first again (the claim is still missing), is
        refused again and takes back again."""
        for d in children:
            if d["kind"] == "PersistentVolumeClaim":
                continue
            ckey = (d["kind"], ns, d["metadata"]["name"])
            obj = self.cache.children.get(ckey)
            if obj is not None and is_owned_by_server(obj, name):
                self.kube.delete(d["kind"], ns, d["metadata"]["name"])
                self.cache.put(self.cache.children, ckey, obj, True)
                self._applied.pop(ckey, None)

    def remove_unwanted(self, ns: str, name: str, wanted: set[str]) -> list[str]:
        """Delete our Secret or ConfigMap once the spec no longer asks for it (the last env or
        file setting removed). The world's claim is never deleted here."""
        removed = []
        for kind in ("Secret", "ConfigMap"):
            if kind in wanted:
                continue
            obj = self.cache.children.get((kind, ns, child_names(name)[kind]))
            if obj and is_owned_by_server(obj, name):
                self.kube.delete(kind, ns, obj["metadata"]["name"])
                self.cache.put(self.cache.children, (kind, ns, obj["metadata"]["name"]), obj, True)
                removed.append(kind)
        return removed

    def ensure(self, desired: dict) -> bool:
        """Apply `desired` unless the cluster already holds it. True when it wrote."""
        meta = desired["metadata"]
        ckey = (desired["kind"], meta["namespace"], meta["name"])
        actual = self.cache.children.get(ckey)
        h = digest(desired)  # of the rendered intent, before any shaping for the server
        if desired["kind"] == "PersistentVolumeClaim" and actual is not None:
            desired = claim_update(desired, actual)
        meta = desired["metadata"]  # a copy to send: the rendered children stay as rendered
        desired = {**desired, "metadata": {**meta, "annotations": {
            **(meta.get("annotations") or {}), ANNOTATION_APPLIED: h}}}
        if actual is not None:
            memo = self._applied.get(ckey)
            if memo == (h, actual["metadata"].get("resourceVersion")):
                return False
            if (actual["metadata"].get("annotations", {}).get(ANNOTATION_APPLIED) == h
                    and is_subset(desired, actual)):
                return False
        result = self.kube.apply(desired)
        self._applied[ckey] = (h, result["metadata"]["resourceVersion"])
        self.cache.put(self.cache.children, ckey, result, False)
        return actual is None or result["metadata"]["resourceVersion"] != actual["metadata"].get(
            "resourceVersion")

    def stop_when_asked(self, body: dict) -> None:
        """spec.state Stopped always wins, even when the rest of the spec cannot be built (its
        Game deleted, say): what was built before is scaled to zero, nothing else is touched."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        dep = self.cache.children.get(("Deployment", ns, name))
        if (body.get("spec") or {}).get("state") != STATE_STOPPED or dep is None \
                or not (dep.get("spec") or {}).get("replicas"):
            return
        updated = self.kube.merge_patch("Deployment", ns, name, {"spec": {"replicas": 0}})
        self.cache.put(self.cache.children, ("Deployment", ns, name), updated, False)
        self.kube.event(body, "Normal", "Stopping", "stopping the server as spec.state asks, "
                        "although the rest of its spec cannot be built")

    def write_status(self, body: dict, invalid: InvalidSpec | None = None,
                     built: st.Built | None = None) -> float | None:
        """Write the server's status when it changed. Returns seconds after which to look
        again while a transitional phase is held back (status.SETTLE_SECONDS)."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        key = ("GameServer", ns, name)
        gen = body["metadata"].get("generation", 0)
        old = body.get("status") or {}
        dep = self.cache.children.get(("Deployment", ns, name))
        pods = self.cache.pods_of(ns, name)
        if invalid is not None:
            new, conds = st.invalid_status(gen, invalid.reason, invalid.message, dep, pods)
        else:
            new, conds = st.built_status(gen, built, dep, self.cache.children.get(("Service", ns, name)),
                                         pods)
        new["conditions"] = st.merge_conditions(old.get("conditions"), conds, st.now_iso())
        self.phases[key] = new["phase"]
        if not st.status_differs(old, new):
            self._transitional.pop(key, None)
            return None
        if invalid is None and not st.records_a_decision(old, new):
            now = time.monotonic()
            since = self._transitional.setdefault(key, now) \
                if new["phase"] in st.TRANSITIONAL else self._transitional.pop(key, None)
            wait = st.settle_wait(new["phase"], since, now)
            if wait is not None:
                return wait
        self._transitional.pop(key, None)
        try:
            updated = self.kube.patch_status("GameServer", ns, name, new)
            # Keep what was written: the next reconcile must not act on the status it replaced.
            self.cache.put(self.cache.gameservers, (ns, name), updated, False)
        except ApiException as e:
            if e.status == 404:  # deleted meanwhile
                return None
            raise
        # Warnings only: a phase change is in the status itself (`kubectl get` shows it), and
        # an Event that repeats it is a write nobody needs.
        if invalid is not None and (old.get("phase") != new["phase"]
                                    or _cond(old, "Valid").get("message") != invalid.message):
            self.kube.event(body, "Warning", invalid.reason, invalid.message)
        for event in st.seed_events(old, new):  # each once: with the status that records it
            self.kube.event(body, *event)
        return None


def is_owned_by_server(obj: dict, name: str) -> bool:
    return any(r.get("kind") == "GameServer" and r.get("name") == name
               for r in obj["metadata"].get("ownerReferences") or [])


def claim_update(desired: dict, actual: dict) -> dict:
    """A claim's spec is immutable once made, except that it may grow. Server-side apply drops
    fields a manager stops sending, so the existing values are sent back unchanged; only labels,
    owner references and a larger size change. A smaller size is ignored (volumes never shrink)."""
    meta = {k: v for k, v in desired["metadata"].items() if k != "annotations"}
    have_spec = actual.get("spec", {})
    want = desired["spec"]["resources"]["requests"]["storage"]
    have = have_spec.get("resources", {}).get("requests", {}).get("storage")
    spec: dict[str, Any] = {
        "accessModes": have_spec.get("accessModes", desired["spec"]["accessModes"]),
        "resources": {"requests": {"storage": want if have is None or
                                   parse_quantity(want) > parse_quantity(have) else have}}}
    if have_spec.get("storageClassName"):
        spec["storageClassName"] = have_spec["storageClassName"]
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec}


def _namespace_gone(e: Exception) -> bool:
    """A 404 for the namespace itself (not for the object asked for)."""
    if not (isinstance(e, ApiException) and e.status == 404):
        return False
    try:
        details = json.loads(e.body or "{}").get("details") or {}
    except ValueError:
        return False
    return details.get("kind") == "namespaces"


def _namespace_terminating(e: Exception) -> bool:
    return isinstance(e, ApiException) and e.status == 403 and "being terminated" in (e.body or "")


def _cond(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})


def _brief(e: Exception) -> str:
    if isinstance(e, ApiException):
        try:
            return f"{e.status} {json.loads(e.body).get('message')}"
        except Exception:
            return f"{e.status} {e.reason}"
    return f"{type(e).__name__}: {e}"
