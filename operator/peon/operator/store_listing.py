"""Backups listed back from the store (issue 26, item 1): for every server with
`spec.backup.store`, a short Job lists the snapshots in its repository, and the operator keeps a
GameServerBackup for each snapshot it has no object for, so a new cluster shows the backups the
old one made (`kubectl get gsb`, `kubectl peon backups`) and can restore any of them.

A listing runs when the operator starts (the first reconcile of each such server asks for one)
and then every `interval` (1 h, `--store-list-interval`), one Job per server at a time and at
most `at_once` in the cluster. Its Job (`peon store list --host ns/name`, the operator's image,
the store's Secret through envFrom, no capabilities, no token) prints the listing as one JSON
line; a termination message holds only 4096 bytes, so that line is read from the pod's log
(bounded), and the termination message gives its length and SHA-256: a log cut short or mixed
is refused, never read as a shorter list. A server that asks for no seed has its repository
made by its listing when it is not there (`--create`; an Event says so): its first backup then
does not wait for restic's `init` and key calibration, and keys that may not write (or make the
bucket) are said at the server's start, not at its first backup. A listing and a store backup
of one server take turns (StoreTurns).

An object made here carries the label `peon.dev/found-in-store` and its status says what the
snapshot's tags and summary say (time, size, files, reason, Game, the image that wrote the
world), with the repository and Secret a restore or a delete needs. No duplicates: a snapshot
any of the server's backups records, or the one a backup of that name is still recording, is
left alone. A snapshot gone from the store takes its listed-back object with it (only after a
whole listing of an existing repository, and only objects of that repository); deleting such an
object forgets its snapshot, as for any backup (backup_reconciler.py).
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from kubernetes.client.rest import ApiException

from peon import API_VERSION, LABEL_GAMESERVER, LABEL_MANAGED_BY, MANAGED_BY
from peon.shared import backup as bk, clock
from peon.shared.model import InvalidSpec, parse_backup_policy
from .runs import RunBase

log = logging.getLogger(__name__)

KIND = "StoreListing"  # the work queue's key kind: ("StoreListing", namespace, server)
LABEL_STORE_LIST = "peon.dev/store-list"  # on a listing Job and its pod: the server's name
CONTAINER = "store"
POLL = 5.0             # seconds between looks while a listing's Job runs
WAIT_TURN = 15.0       # seconds before asking again when `at_once` listings run
DEADLINE = 600         # a listing Job's whole life
LOG_LIMIT = 4 << 20    # bytes of a listing's log read at most (a listing of 5,000 is ~2 MB)
NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
GAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
IMAGE = re.compile(r"[\x21-\x7e]{1,512}")  # printable, no spaces
REASONS = (bk.MANUAL, bk.SCHEDULED, bk.BEFORE_UPDATE, bk.BEFORE_ERADICATION, bk.BEFORE_STOP)
SHOWN = 5  # names an Event lists before "and N more"


class ListingError(Exception):
    """A listing that cannot be used, with what to tell the user."""


@dataclass(frozen=True)
class Snapshot:
    id: str
    time: str
    name: str
    reason: str = bk.MANUAL
    game: str | None = None
    image: str | None = None
    size: int | None = None
    files: int | None = None


@dataclass
class Listing:
    snapshots: list[Snapshot] = field(default_factory=list)  # ones a backup object can name
    ids: set[str] = field(default_factory=set)  # every snapshot the repository holds
    complete: bool = False  # every snapshot of the server is listed (removals are safe)
    created: bool = False  # the repository was not there, and the listing made it


def job_name(server: str) -> str:
    return bk.fit(f"{server}-store-list")


def listing_job(gs: dict, target: bk.StoreTarget, image: str,
                scheduling: dict[str, Any] | None = None, create: bool = True) -> dict[str, Any]:
    """The listing's Job: `peon store list`, owned by the server (it goes with it). Its pod is
    not the server's (no gameserver label: it is no game pod, and nothing waits for it). With
    CREATE it makes a repository that is not there yet, ahead of the server's first backup."""
    meta = gs["metadata"]
    name = job_name(meta["name"])
    labels = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_STORE_LIST: meta["name"]}
    pod: dict[str, Any] = {
        "restartPolicy": "Never", "automountServiceAccountToken": False,
        "containers": [{
            "name": CONTAINER, "image": image,
            "command": ["peon", "store", "list", "--host", f"{meta['namespace']}/{meta['name']}",
                        *(["--create"] if create else [])],
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "env": [{"name": "RESTIC_REPOSITORY", "value": target.repository}] + (
                [{"name": "AWS_DEFAULT_REGION", "value": target.region}] if target.region else []),
            "envFrom": [{"secretRef": {"name": target.secret}}],
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            "securityContext": bk.job_security_context(bk.step_capabilities("store", "list")),
        }],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
        **dict(scheduling or {}),
    }
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": meta["namespace"],
                     "labels": {**labels, LABEL_GAMESERVER: meta["name"]},
                     "ownerReferences": [{"apiVersion": API_VERSION, "kind": "GameServer",
                                          "name": meta["name"], "uid": meta["uid"]}]},
        "spec": {"backoffLimit": 0, "activeDeadlineSeconds": DEADLINE,
                 "ttlSecondsAfterFinished": 3600,
                 "template": {"metadata": {"labels": labels}, "spec": pod}},
    }


def parse_listing(line: bytes | str) -> Listing:
    """`peon store list`'s JSON line, every value checked again here (the store's tags are
    anyone's who can write to the bucket)."""
    try:
        doc = json.loads(line)
    except ValueError as e:
        raise ListingError("the listing is not JSON") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("snapshots"), list):
        raise ListingError("the listing holds no list of snapshots")
    created = doc.get("created") is True  # an empty repository just made: no word either
    out = Listing(complete=doc.get("complete") is True and not doc.get("missing") and not created,
                  created=created)
    for e in doc["snapshots"]:
        if not isinstance(e, dict) or not re.fullmatch(r"[0-9a-f]{64}", str(e.get("id", ""))):
            out.complete = False  # one that cannot be read: removals would be guesses
            continue
        out.ids.add(e["id"])
        when = clock.parse(str(e.get("time") or ""))
        name = str(e.get("name") or "")
        if when is None or e.get("path") != bk.DATA_MOUNT or not NAME.fullmatch(name):
            continue  # not a world a restore Job can put back (made by hand, another folder)
        game, image = str(e.get("game") or ""), str(e.get("image") or "")
        size, files = e.get("size"), e.get("files")
        out.snapshots.append(Snapshot(
            id=e["id"], time=clock.iso(when), name=name,
            reason=e.get("reason") if e.get("reason") in REASONS else bk.MANUAL,
            game=game if GAME.fullmatch(game) else None,
            image=image if IMAGE.fullmatch(image) else None,
            size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
            files=files if isinstance(files, int) and not isinstance(files, bool) and files >= 0 else None))
    return out


def listed_line(log_text: bytes, summary: dict) -> bytes:
    """The line of the log that the termination message vouches for (its length and SHA-256)."""
    want, length = summary.get("sha256"), summary.get("bytes")
    for line in log_text.splitlines():
        if len(line) == length and hashlib.sha256(line).hexdigest() == want:
            return line
    raise ListingError("the listing in the Job's log is cut short or does not match its "
                       "termination message")


class StoreListing(RunBase):
    def __init__(self, kube, cache, queue, job_image: str, interval: float = 3600.0,
                 at_once: int = 4, turns: StoreTurns | None = None):
        super().__init__(kube, cache, queue, job_image)
        self.interval, self.at_once = interval, at_once
        self.turns = turns or StoreTurns()  # shared with the backup reconciler
        self.clock: Callable[[], float] = time.monotonic
        self._ended: dict[tuple[str, str], float] = {}  # server -> when its last listing ended
        self._said: dict[tuple[str, str], str] = {}     # server -> the failure last said
        self.read_log: Callable[[str, str, int], bytes] = self._read_log

    # --- when --------------------------------------------------------------------------------

    def note(self, ns: str, name: str) -> None:
        """A server with a store was reconciled: it is listed once after the operator started
        (the listing then asks again every interval by itself)."""
        if (ns, name) not in self._ended:
            self.queue.add((KIND, ns, name))

    def forget(self, ns: str, name: str) -> None:
        self._ended.pop((ns, name), None)
        self._said.pop((ns, name), None)

    def _running(self) -> int:
        return sum(1 for (_, _), j in list(self.cache.jobs.items())
                   if LABEL_STORE_LIST in ((j.get("metadata") or {}).get("labels") or {})
                   and bk.job_outcome(j)[0] not in bk.FINISHED)

    # --- one look ----------------------------------------------------------------------------

    def reconcile(self, ns: str, name: str) -> float | None:
        key = (ns, name)
        gs = self.cache.gameservers.get(key)
        store = _store_of(gs)
        jname = job_name(name)
        job = self.cache.jobs.get((ns, jname))
        if store is None:  # gone, being deleted, or no longer off-site
            self.forget(ns, name)
            return None
        if job is None:
            ended = self._ended.get(key)
            if ended is not None and (wait := ended + self.interval - self.clock()) > 0:
                return wait
            if self._running() >= self.at_once:
                return WAIT_TURN
            if any(r["metadata"].get("deletionTimestamp")
                   for r in self.cache.runs_of(self.cache.backups, ns, name)):
                return WAIT_TURN  # a snapshot is being forgotten: list once it is gone
            view = self.cache.secrets.get((ns, store.secret))
            if view is None or not set(bk.STORE_SECRET_KEYS) <= set(view.keys):
                return None  # the server says InvalidBackupStore; a fixed Secret queues it
            turn = self.turns.of(ns, name)
            if not turn.acquire(blocking=False):
                return WAIT_TURN  # a store backup of the server is starting
            try:
                if backup_running(self.cache, ns, name):
                    return WAIT_TURN  # it may be making the repository (StoreTurns)
                return self._start(gs, store, jname)
            finally:
                turn.release()
        phase, why = bk.job_outcome(job)
        if phase not in bk.FINISHED:
            return POLL
        try:
            if phase != bk.SUCCEEDED:
                raise ListingError(self._termination_message(ns, jname).get("error") or why)
            listing = self.read(ns, jname)
            made, gone = self.apply(gs, store, listing)
            self._said.pop(key, None)
            if listing.created:
                self.kube.event(gs, "Normal", "StoreRepositoryCreated",
                                f"made the repository {store.repository(ns, name)} for the "
                                "server's backups")
            if made:
                self.kube.event(gs, "Normal", "BackupsFoundInStore",
                                f"made {len(made)} backup objects for snapshots found in "
                                f"{store.repository(ns, name)}: {_names(made)}")
            if gone:
                self.kube.event(gs, "Normal", "BackupsGoneFromStore",
                                f"{len(gone)} snapshots are no longer in the store; their "
                                f"backup objects go: {_names(gone)}")
        except ListingError as e:
            msg = f"listing the backups in the store failed: {e}"
            log.warning("%s/%s: %s", ns, name, msg)
            if self._said.get(key) != msg:
                self._said[key] = msg
                self.kube.event(gs, "Warning", "StoreListFailed", msg)
        self.kube.delete("Job", ns, jname)
        self.cache.put(self.cache.jobs, (ns, jname), job, True)
        self._ended[key] = self.clock()
        return self.interval

    def _start(self, gs: dict, store: bk.Store, jname: str) -> float:
        ns, name = gs["metadata"]["namespace"], gs["metadata"]["name"]
        target = bk.StoreTarget(store.repository(ns, name), store.secret, store.region)
        try:
            # A server that asks for a seed is not given a repository: a seed from one that is
            # not there says so (a wrong bucket or prefix), not "no snapshot".
            job = self.kube.create(listing_job(gs, target, self.job_image, self._scheduling(gs),
                                               create=store.seed is None))
        except ApiException as e:
            if e.status != 409:
                raise
            return POLL  # made already; its event is on its way
        self.cache.put(self.cache.jobs, (ns, jname), job, False)
        return POLL

    def read(self, ns: str, jname: str) -> Listing:
        """The listing the Job printed: its log (bounded), held to its termination message."""
        pods = self.kube.list("Pod", ns, f"job-name={jname}")
        if not pods:
            raise ListingError(f"the Job {jname} has no pod to read")
        pod = max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")
        text = self.read_log(ns, pod["metadata"]["name"], LOG_LIMIT)
        summary = self._termination_message(ns, jname)
        if summary.get("error"):
            raise ListingError(summary["error"])
        if not isinstance(summary.get("bytes"), int) or summary["bytes"] >= LOG_LIMIT:
            raise ListingError("the Job's termination message does not describe a listing "
                               "Peon can read")
        return parse_listing(listed_line(text, summary))

    def _read_log(self, ns: str, pod: str, limit: int) -> bytes:
        from kubernetes.client import CoreV1Api
        try:
            resp = CoreV1Api(self.kube.api).read_namespaced_pod_log(
                pod, ns, container=CONTAINER, limit_bytes=limit, _preload_content=False,
                _request_timeout=30)
        except ApiException as e:
            raise ListingError(f"the listing's log cannot be read ({e.status} {e.reason})") from e
        try:
            return resp.read(limit)
        finally:
            resp.release_conn()

    # --- the objects -------------------------------------------------------------------------

    def apply(self, gs: dict, store: bk.Store, listing: Listing) -> tuple[list[str], list[str]]:
        """Make the objects the listing lacks, remove the listed-back ones whose snapshot went.
        Returns their names."""
        ns, name = gs["metadata"]["namespace"], gs["metadata"]["name"]
        repo = store.repository(ns, name)
        runs = self.cache.runs_of(self.cache.backups, ns, name)
        known = {(r.get("status") or {}).get("snapshot") for r in runs}
        made: list[str] = []
        for snap in sorted(listing.snapshots, key=lambda s: (s.time, s.id)):
            if snap.id in known:
                continue
            obj_name = snap.name
            same = self.cache.backups.get((ns, snap.name))
            if same is not None:
                st = same.get("status") or {}
                if (same.get("spec") or {}).get("gameServer") == name and not st.get("snapshot"):
                    if _found(same):  # made here, its status never written: write it now
                        self._write_found(same, snap, store, repo)
                    continue  # that backup is still recording its snapshot (or never got it)
                obj_name = bk.fit(f"{snap.name}-{snap.id[:8]}")
                if (ns, obj_name) in self.cache.backups:
                    continue
            labels = {**(gs["metadata"].get("labels") or {}), bk.LABEL_FOUND_IN_STORE: "true"}
            obj = bk.backup_object(gs, obj_name, snap.reason, labels)
            try:
                created = self.kube.create(obj)
            except ApiException as e:
                if e.status == 409:
                    continue  # made meanwhile: the next listing looks again
                raise
            self.cache.put(self.cache.backups, (ns, obj_name), created, False)
            self._write_found(created, snap, store, repo)
            made.append(obj_name)
        gone: list[str] = []
        if listing.complete:
            for r in runs:
                st = r.get("status") or {}
                if (_found(r) and st.get("store") == repo and st.get("snapshot")
                        and st["snapshot"] not in listing.ids
                        and not r["metadata"].get("deletionTimestamp")):
                    # Nothing left to forget: the finalizer goes first, then the object.
                    self._set_finalizer("GameServerBackup", r, bk.FINALIZER_ARCHIVE, False,
                                        self.cache.backups, (ns, r["metadata"]["name"]))
                    self.kube.delete("GameServerBackup", ns, r["metadata"]["name"])
                    gone.append(r["metadata"]["name"])
        return made, gone

    def _write_found(self, obj: dict, snap: Snapshot, store: bk.Store, repo: str) -> None:
        status: dict[str, Any] = {
            "phase": bk.SUCCEEDED, "completionTime": snap.time, "snapshot": snap.id,
            "store": repo, "storeSecret": store.secret, "storeRegion": store.region,
            "size": snap.size, "files": snap.files, "game": snap.game,
            "serverImage": snap.image, "image": self.job_image,
            "foundInStore": clock.iso(clock.now()),
            "message": f"found in the store: snapshot {snap.id[:8]} of {snap.time}"}
        self._write(obj, {k: v for k, v in status.items() if v is not None})


class StoreTurns:
    """A server's store Jobs that may create its repository, a listing and a backup, take
    turns: two restic inits at once on S3 could each write a config and a key and leave a
    repository neither opens (S3 has no create-if-absent that restic uses). Each side holds the
    server's lock while it looks for the other's running Job and makes its own (and puts it in
    the cache), so the other sees it: the backup through its hooks too (blocking: a listing
    holds the lock only for a look and a create), the listing never waiting for it."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()

    def of(self, ns: str, server: str) -> threading.Lock:
        """The server's lock. Never dropped (a lock dropped while held would let a second
        holder in): one small lock per server that ever had a store."""
        with self._guard:
            return self._locks[(ns, server)]


def listing_running(cache, ns: str, server: str) -> bool:
    """Does a listing of the server run now (its Job made and not finished)?"""
    job = cache.jobs.get((ns, job_name(server)))
    return job is not None and bk.job_outcome(job)[0] not in bk.FINISHED


def backup_running(cache, ns: str, server: str) -> bool:
    """Does a backup Job of the server run now (found by its labels, whatever its backup's
    status says)?"""
    for (job_ns, _), job in list(cache.jobs.items()):
        labels = (job.get("metadata") or {}).get("labels") or {}
        if (job_ns == ns and labels.get(LABEL_GAMESERVER) == server and bk.LABEL_BACKUP in labels
                and bk.job_outcome(job)[0] not in bk.FINISHED):
            return True
    return False


def _store_of(gs: dict | None) -> bk.Store | None:
    if gs is None or gs["metadata"].get("deletionTimestamp"):
        return None
    try:
        return parse_backup_policy((gs.get("spec") or {}).get("backup")).store
    except InvalidSpec:
        return None


def _found(run: dict) -> bool:
    return ((run["metadata"].get("labels") or {}).get(bk.LABEL_FOUND_IN_STORE)) == "true"


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")
