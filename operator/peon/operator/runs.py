"""Backup and restore runs, the GameServer's side, and what the run reconcilers share.

`RunBase` holds what every run reconciler needs (writing a run's status, its Events and
finalizers, finishing a run, where its Job goes); `ServerRuns` is the GameServer reconcile's side of
runs: it holds an image update until a backup succeeded, stops the server while a restore runs,
makes scheduled backups, applies retention, and takes the final backup before eradication. The
GameServerBackup and GameServerRestore reconcilers are backup_reconciler.py and
restore_reconciler.py.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Callable

from kubernetes.client.rest import ApiException

from peon import LABEL_GAMESERVER, LABEL_MANAGED_BY, MANAGED_BY
from peon.shared import backup as bk, clock, metrics, notify as nt, status as st
from .cache import Cache
from .lost_node import current_claim, server_claims
from peon.shared.kube import Kube
from peon.shared.model import GameServer, InvalidSpec, parse_backup_policy, parse_scheduling
from .workqueue import WorkQueue

log = logging.getLogger(__name__)


class RunBase:
    def __init__(self, kube: Kube, cache: Cache, queue: WorkQueue, job_image: str):
        self.kube, self.cache, self.queue, self.job_image = kube, cache, queue, job_image
        # (GameServer, its notify policy, messages): set by the controller; nothing by default.
        self.notify: Callable[[dict, nt.Policy | None, list[nt.Message]], None] = \
            lambda body, policy, messages: None

    def _finish(self, run: dict, phase: str, msg: str, job: dict | None = None) -> None:
        ns = run["metadata"]["namespace"]
        update: dict[str, Any] = {"phase": phase, "message": msg, "completionTime": clock.iso(clock.now())}
        # The game saves again before anything else: the after commands run whatever the
        # outcome, and are recorded in the same write as the outcome (a restart in between
        # runs them once more, which turning saving on tolerates).
        resumed, resume_failure = self._resume(run), None
        if resumed is not None:
            update["hooks"], resume_failure = resumed
        if job is not None:
            js = job.get("status") or {}
            if js.get("startTime"):
                update["startTime"] = js["startTime"]
            finished = bk.job_finished_at(job)
            if finished:
                update["completionTime"] = finished
            result = self._termination_message(ns, job["metadata"]["name"])
            if phase == bk.SUCCEEDED:
                for k in ("sha256", "size", "files", "warnings", "snapshot", "added"):
                    if result.get(k) is not None:
                        update[k] = result[k]
                if result.get("warnings"):
                    update["message"] = (f"{msg}, leaving out {len(result['warnings'])} "
                                         "entries (see warnings)")
            elif result.get("error"):
                update["message"] = f"{msg}: {result['error']}"
        if resume_failure:
            update["message"] = f"{update['message']}; {resume_failure}"
        self._write(run, update)
        if resume_failure:
            self._event(run, self.cache.gameservers.get((ns, run["spec"]["gameServer"])),
                        "Warning", "BackupHookFailed", resume_failure)
        if job is not None and phase == bk.SUCCEEDED:
            # The outcome is recorded; a finished pod that mounts the world would keep its claim
            # in use (pvc-protection) and so block an eradication. Failed Jobs stay a day for
            # their logs (ttlSecondsAfterFinished).
            self.kube.delete("Job", ns, job["metadata"]["name"])
        gs = self.cache.gameservers.get((ns, run["spec"]["gameServer"]))
        kind = run["kind"].replace("GameServer", "")
        if phase == bk.SUCCEEDED:
            self._event(run, gs, "Normal", f"{kind}Succeeded", f"{kind.lower()} {run['metadata']['name']} succeeded")
        else:
            self._event(run, gs, "Warning", f"{kind}Failed", f"{kind.lower()} {run['metadata']['name']} failed: {update['message']}")
            if kind == "Backup" and gs is not None:
                self.notify(gs, nt.parse_policy((gs.get("spec") or {}).get("notify")),
                            [nt.backup_failed(gs["metadata"]["name"], run["metadata"]["name"],
                                              update["message"])])
        if kind == "Backup":
            metrics.BACKUPS.labels(phase.lower()).inc()
        self.queue.add(("GameServer", ns, run["spec"]["gameServer"]))

    def _resume(self, run: dict) -> tuple[dict, str | None] | None:
        """The after commands of a backup's hooks (backup_reconciler.py); none here."""
        return None


    # --- helpers ---------------------------------------------------------------------------------

    def _ensure_backup_volume(self, gs: dict, policy: bk.Policy) -> None:
        ns, name = gs["metadata"]["namespace"], bk.backup_volume(gs["metadata"]["name"])
        if self.cache.children.get(("PersistentVolumeClaim", ns, name)) or \
                self.kube.get("PersistentVolumeClaim", ns, name):
            return
        self.kube.apply(bk.backup_claim(gs, policy))

    def _scheduling(self, gs: dict | None) -> dict[str, Any]:
        """Where the server's pod may run (its own fields over its Game's), for its Jobs."""
        if gs is None:
            return {}
        spec = gs.get("spec") or {}
        game = self.cache.game(spec.get("gameUid", "")) or {}
        default = parse_scheduling((game.get("spec") or {}).get("scheduling"))
        return parse_scheduling(spec.get("scheduling")).over(default).pod_fields()

    def _server_node(self, ns: str, gs_name: str) -> str | None:
        for p in self.cache.pods_of(ns, gs_name):
            node = (p.get("spec") or {}).get("nodeName")
            if node and not p["metadata"].get("deletionTimestamp"):
                return node
        return None

    def _termination_message(self, ns: str, job_name: str) -> dict:
        for p in self.kube.list("Pod", ns, f"job-name={job_name}"):
            for c in (p.get("status") or {}).get("containerStatuses") or []:
                msg = ((c.get("state") or {}).get("terminated") or {}).get("message")
                if msg:
                    try:
                        return json.loads(msg.strip().splitlines()[-1])
                    except (ValueError, IndexError):
                        return {"error": msg.strip()[-500:]}
        return {}

    def _write(self, run: dict, update: dict) -> None:
        old = run.get("status") or {}
        if not st.status_differs(old, update):
            return
        meta = run["metadata"]
        store = self.cache.backups if run["kind"] == "GameServerBackup" else self.cache.restores
        try:
            new = self.kube.patch_status(run["kind"], meta["namespace"], meta["name"], update)
            self.cache.put(store, (meta["namespace"], meta["name"]), new, False)
        except ApiException as e:
            if e.status != 404:
                raise

    def _event(self, run: dict, gs: dict | None, type_: str, reason: str, message: str) -> None:
        self.kube.event(run, type_, reason, message)
        if gs is not None:
            self.kube.event(gs, type_, reason, message)

    def _set_finalizer(self, kind: str, obj: dict, finalizer: str, present: bool,
                       store: dict, key) -> None:
        fins = list(obj["metadata"].get("finalizers") or [])
        if (finalizer in fins) == present:
            return
        fins = fins + [finalizer] if present else [f for f in fins if f != finalizer]
        meta = obj["metadata"]
        # The resourceVersion makes this a compare-and-swap: another writer's finalizer is never lost.
        patch = {"finalizers": fins, "resourceVersion": meta["resourceVersion"]}
        try:
            new = self.kube.patch_metadata(kind, meta["namespace"], meta["name"], patch)
            self.cache.put(store, key, new, False)
        except ApiException as e:
            if e.status != 404:  # 409: changed meanwhile; the retry reads the new version
                raise


class ServerRuns(RunBase):
    # --- GameServer side -------------------------------------------------------------------------

    def restoring(self, ns: str, gs: str) -> dict | None:
        """The restore that holds this server stopped, if any. Only one the restore reconcile
        accepted (Pending or Running): a restore that will be refused never stops a server."""
        return next((r for r in self.cache.runs_of(self.cache.restores, ns, gs)
                     if (r.get("status") or {}).get("phase") in (bk.PENDING, bk.RUNNING)), None)

    def backup_before_update(self, body: dict, gs: GameServer, target: str) -> tuple[str, dict]:
        """The image to render and the Updated condition. A new image waits for a backup of the
        world as it is (this step asks for that backup); a failed backup holds it, and nothing
        is lost."""
        policy = gs.backup
        gen = body["metadata"].get("generation", 0)
        dep = self.cache.children.get(("Deployment", gs.namespace, gs.name))
        current = None
        if dep:
            current = dep["spec"]["template"]["spec"]["containers"][0]["image"]
        if not current or current == target or not policy.before_update:
            return target, st.condition("Updated", True, "UpToDate", f"running {target}", gen)
        name = bk.before_update_name(gs.name, target)
        run = self.cache.backups.get((gs.namespace, name))
        if run is None:
            self.create_backup(body, name, bk.BEFORE_UPDATE)
            phase = bk.PENDING
        else:
            phase = (run.get("status") or {}).get("phase") or bk.PENDING
        if phase == bk.SUCCEEDED:
            return target, st.condition("Updated", True, "UpToDate", f"running {target}", gen)
        if phase == bk.FAILED:
            why = (run.get("status") or {}).get("message", "")
            return current, st.condition(
                "Updated", False, "BackupFailed",
                f"the update to {target} is held: backup {name} failed ({why}). Delete that "
                "backup to try again, or set spec.backup.beforeUpdate: false", gen)
        return current, st.condition("Updated", False, "BackingUp",
                                     f"backing up before updating to {target} ({name})", gen)

    def backup_before_stop(self, body: dict, gs: GameServer, decision_run: bool, reason: str
                           ) -> str | None:
        """With spec.uptime.backupBeforeStop, an automatic stop of a running server waits for a
        backup of the session that ends (this step asks for it). Returns a message while it
        waits, else None."""
        meta = body["metadata"]
        dep = self.cache.children.get(("Deployment", meta["namespace"], meta["name"]))
        session = ((body.get("status") or {}).get("uptime") or {}).get("sessionStart")
        if (decision_run or reason == "Stopped" or not gs.uptime.backup_before_stop
                or not dep or not dep["spec"].get("replicas") or not session):
            return None
        name = bk.before_stop_name(meta["name"], session)
        run = self.cache.backups.get((meta["namespace"], name))
        if run is None:
            self.create_backup(body, name, bk.BEFORE_STOP)
            return f"backing up ({name}) before stopping"
        if (run.get("status") or {}).get("phase") in bk.FINISHED:
            return None  # a failed backup does not keep a server up: it says so in its run
        return f"backing up ({name}) before stopping"

    def create_backup(self, body: dict, name: str, reason: str) -> None:
        """A run the operator starts carries the GameServer's labels (and its Job's pod too)."""
        try:
            self.kube.create(bk.backup_object(body, name, reason, body["metadata"].get("labels")))
            self.kube.event(body, "Normal", "BackupRequested", f"{reason}: backup {name}")
        except ApiException as e:
            if e.status != 409:  # already there: the run is under way
                raise

    def schedule_and_retain(self, body: dict, policy: bk.Policy) -> tuple[float | None, dict]:
        """Make the scheduled backup that is due, apply retention; return when to look again
        and the status.backup block."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        old = (body.get("status") or {}).get("backup") or {}
        now = clock.now()
        out: dict[str, Any] = {}
        requeue = None
        if policy.schedule:
            since = clock.parse(old.get("lastScheduleTime")) or clock.parse(body["metadata"]["creationTimestamp"])
            slot = bk.due_slot(policy.schedule, policy.time_zone, now, since)
            if slot is not None:
                self.create_backup(body, bk.scheduled_name(name, slot), bk.SCHEDULED)
                out["lastScheduleTime"] = clock.iso(slot)
            elif old.get("lastScheduleTime"):
                out["lastScheduleTime"] = old["lastScheduleTime"]
            _, nxt = bk.schedule_slots(policy.schedule, policy.time_zone, now)
            out["nextScheduleTime"] = clock.iso(nxt)
            requeue = max(0.5, min(clock.requeue_cap(), (nxt - now).total_seconds()))
        runs = self.cache.runs_of(self.cache.backups, ns, name)
        if policy.keep_last is not None or policy.max_age is not None:
            for doomed in bk.expired(runs, policy.keep_last, policy.max_age, now):
                self.kube.delete("GameServerBackup", ns, doomed)
                self.kube.event(body, "Normal", "BackupExpired", f"retention deleted backup {doomed}")
        ok = [r for r in runs if (r.get("status") or {}).get("phase") == bk.SUCCEEDED]
        if ok:
            newest = max(ok, key=bk.finished_at)
            out["lastSuccessful"] = newest["metadata"]["name"]
            if newest["status"].get("completionTime"):
                out["lastSuccessfulTime"] = newest["status"]["completionTime"]
        if policy.store is not None:
            again = self._offsite_window(body, policy, runs, old, out, now)
            if again is not None:
                requeue = again if requeue is None else min(requeue, again)
        return requeue, out

    def _offsite_window(self, body: dict, policy: bk.Policy, runs: list[dict], old: dict,
                        out: dict, now) -> float | None:
        """The loss window: the newest off-site snapshot (status.backup.lastOffsite*), and,
        with a schedule, whether it is older than the schedule promised (offsiteOverdue, a
        Warning when that turns true). Returns when to judge again."""
        newest = bk.newest_offsite(runs)
        when = clock.parse(bk.finished_at(newest)[0]) if newest else None
        if newest is not None:
            out["lastOffsite"] = newest["metadata"]["name"]
            out["lastOffsiteTime"] = clock.iso(when)
        if not policy.schedule:
            return None
        missing, judge_again = bk.offsite_overdue(
            policy.schedule, policy.time_zone, now, when,
            clock.parse(body["metadata"]["creationTimestamp"]))
        if missing is not None:
            out["offsiteOverdue"] = True
            if not old.get("offsiteOverdue"):
                had = f"is from {clock.iso(when)}" if when else "does not exist"
                self.kube.event(body, "Warning", "OffsiteBackupOverdue",
                                f"the newest off-site snapshot {had}; the schedule "
                                f"({policy.schedule}) promised one at {clock.iso(missing)}: "
                                f"play since then would be lost with the node")
        return max(0.5, min(clock.requeue_cap(), (judge_again - now).total_seconds()))

    def ensure_finalizer(self, body: dict, gs: GameServer) -> None:
        """Eradication (retainOnDelete: false) waits for a final backup: a finalizer holds the
        GameServer, and with it the world, until that backup succeeded."""
        want = not gs.storage.retain_on_delete and gs.backup.before_eradication
        self._set_finalizer("GameServer", body, bk.FINALIZER_FINAL_BACKUP, want,
                            self.cache.gameservers, (gs.namespace, gs.name))

    def before_eradication(self, body: dict) -> None:
        meta = body["metadata"]
        if bk.FINALIZER_FINAL_BACKUP not in (meta.get("finalizers") or []):
            return
        ns, name = meta["namespace"], meta["name"]
        spec = body.get("spec") or {}
        retain = (spec.get("storage") or {}).get("retainOnDelete", True)
        try:
            policy = parse_backup_policy(spec.get("backup"))
        except InvalidSpec:
            policy = bk.Policy()
        if retain or not policy.before_eradication:
            self._set_finalizer("GameServer", body, bk.FINALIZER_FINAL_BACKUP, False,
                                self.cache.gameservers, (ns, name))
            return
        run_name = bk.final_name(name, meta["uid"])
        run = self.cache.backups.get((ns, run_name))
        if run is None:
            self.create_backup(body, run_name, bk.BEFORE_ERADICATION)
            return
        phase = (run.get("status") or {}).get("phase")
        if phase == bk.SUCCEEDED:
            self.kube.event(body, "Normal", "FinalBackup",
                            f"final backup {run_name} succeeded; deleting the world")
            self._set_finalizer("GameServer", body, bk.FINALIZER_FINAL_BACKUP, False,
                                self.cache.gameservers, (ns, name))
        elif phase == bk.FAILED:
            msg = (f"the final backup {run_name} failed, so the world is kept; delete that backup "
                   "to try again, or set spec.backup.beforeEradication: false to delete anyway")
            old = (body.get("status") or {}).get("message")
            if old != msg:
                self.kube.patch_status("GameServer", ns, name, {"message": msg})
                self.kube.event(body, "Warning", "FinalBackupFailed", msg)


def api_reason(e: ApiException) -> str:
    """What the API server (or the kubelet behind it) said when it refused an exec session."""
    try:
        return json.loads(e.body or "{}").get("message") or e.reason or str(e.status)
    except ValueError:
        return e.reason or str(e.status)


def claim_refusal(cache: Cache, gs: dict) -> str | None:
    """Why nothing may touch the server's world, or None: an existing claim is used only when
    it is labelled for this server (backups read it and restores overwrite it as root, so
    naming a claim must not be enough to get at another's world). The claims' stream holds
    exactly the claims labelled for Peon. The server's reconcile says it (ClaimNotAllowed),
    and a backup or restore of it fails with it."""
    claim = ((gs.get("spec") or {}).get("storage") or {}).get("existingClaim")
    if not claim:
        return None
    ns, name = gs["metadata"]["namespace"], gs["metadata"]["name"]
    held = cache.children.get(("PersistentVolumeClaim", ns, claim)) or {}
    if ((held.get("metadata") or {}).get("labels") or {}).get(LABEL_GAMESERVER) != name:
        return (f"spec.storage.existingClaim: claim {claim!r} is not labelled for this server; "
                f"whoever may use it labels it: kubectl -n {ns} label pvc {claim} "
                f"{LABEL_MANAGED_BY}={MANAGED_BY} {LABEL_GAMESERVER}={name}")
    return None


def data_claim(gs: dict, cache: Cache | None = None) -> str:
    """The claim the server's world is on: a lost node's recovery moves it to a new claim
    (lost_node.py), which backups and restores then use."""
    st_ = (gs.get("spec") or {}).get("storage") or {}
    base = st_.get("existingClaim") or f"{gs['metadata']['name']}-data"
    if cache is None:
        return base
    ns, name = gs["metadata"]["namespace"], gs["metadata"]["name"]
    return current_claim(name, base, server_claims(cache.children, ns, name, base))


def store_target(status: dict) -> bk.StoreTarget:
    """The repository a backup's snapshot is in, as its status recorded it."""
    return bk.StoreTarget(status["store"], status["storeSecret"], status.get("storeRegion"))
