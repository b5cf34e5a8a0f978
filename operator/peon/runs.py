"""Backup and restore runs: the I/O half of backup.py, called by the controller.

A GameServerBackup becomes a Job (archive the data volume), a GameServerRestore a Job (stop
the server, restore, start it again). Around the GameServer's own reconcile this module also
holds an image update until a backup succeeded, stops the server while a restore runs, makes
scheduled backups, applies retention, and takes the final backup before eradication.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Callable

from kubernetes.client.rest import ApiException

from . import backup as bk, clock, metrics, notify as nt, status as st
from .cache import Cache
from .kube import Kube, refusal
from .model import (BackupHooks, GameServer, InvalidSpec, parse_backup_policy, parse_game,
                    parse_scheduling)
from .workqueue import WorkQueue

log = logging.getLogger(__name__)


class Runs:
    def __init__(self, kube: Kube, cache: Cache, queue: WorkQueue, job_image: str):
        self.kube, self.cache, self.queue, self.job_image = kube, cache, queue, job_image
        # (GameServer, its notify policy, messages): set by the controller; nothing by default.
        self.notify: Callable[[dict, nt.Policy | None, list[nt.Message]], None] = \
            lambda body, policy, messages: None

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
        return requeue, out

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

    # --- backups ---------------------------------------------------------------------------------

    def reconcile_backup(self, ns: str, name: str) -> None:
        run = self.cache.backups.get((ns, name))
        if run is None:
            return
        if run["metadata"].get("deletionTimestamp"):
            return self._delete_archive(run)
        self._set_finalizer("GameServerBackup", run, bk.FINALIZER_ARCHIVE, True,
                            self.cache.backups, (ns, name))
        status = run.get("status") or {}
        if status.get("phase") in bk.FINISHED:
            return
        gs_name = run["spec"]["gameServer"]
        job_name = bk.fit(f"{name}-backup")
        job = self.cache.jobs.get((ns, job_name))
        gs = self.cache.gameservers.get((ns, gs_name))
        if job is None:
            if gs is None:
                return self._finish(run, bk.FAILED, f"GameServer {gs_name!r} does not exist")
            try:
                policy = parse_backup_policy((gs.get("spec") or {}).get("backup"))
            except InvalidSpec as e:
                return self._finish(run, bk.FAILED, e.message)
            failure = self._make_consistent(run, gs)
            if failure:
                return self._finish(run, bk.FAILED, failure)
            if policy.store is not None:
                return self._start_store_backup(run, gs, policy.store, job_name)
            try:
                self._ensure_backup_volume(gs, policy)
            except ApiException as e:
                refused = refusal(e, bk.backup_claim(gs, policy))
                if refused is None:
                    raise  # transient: tried again
                # The policy's storage cannot be made: this run fails and says why (and so does
                # every scheduled one after it, each with an Event), never silently.
                return self._finish(run, bk.FAILED, f"the backup volume cannot be created: {refused}")
            node = self._server_node(ns, gs_name)
            archive = bk.archive_path(name)
            job = self.kube.create(bk.run_job(
                run, "GameServerBackup", ["create", bk.DATA_MOUNT, archive], _data_claim(gs),
                bk.backup_volume(gs_name), self.job_image, node, True, "backup",
                self._scheduling(gs)))
            self.cache.put(self.cache.jobs, (ns, job_name), job, False)
            self._write(run, {"phase": bk.PENDING, "job": job_name, "image": self.job_image,
                              "volume": bk.backup_volume(gs_name),
                              "archive": archive, "node": node or "",
                              "message": "waiting for the Job's pod"})
            self._event(run, gs, "Normal", "BackupStarted", f"backup {name} started ({run['spec'].get('reason', bk.MANUAL)})")
            return
        phase, msg = bk.job_outcome(job)
        if phase in bk.FINISHED:
            return self._finish(run, phase, msg, job)
        update = {"phase": phase, "message": msg}
        if (job.get("status") or {}).get("startTime"):
            update["startTime"] = job["status"]["startTime"]
        self._write(run, update)

    def _start_store_backup(self, run: dict, gs: dict, store: bk.Store, job_name: str) -> None:
        """An off-site backup: a snapshot of the world in the server's repository in the store."""
        meta = run["metadata"]
        ns, name, gs_name = meta["namespace"], meta["name"], gs["metadata"]["name"]
        target = bk.StoreTarget(store.repository(ns, gs_name), store.secret, store.region)
        node = self._server_node(ns, gs_name)
        job = self.kube.create(bk.run_job(
            run, "GameServerBackup", ["backup", bk.DATA_MOUNT, "--host", f"{ns}/{gs_name}",
                                      "--name", name],
            _data_claim(gs), None, self.job_image, node, True, "backup", self._scheduling(gs),
            store=target))
        self.cache.put(self.cache.jobs, (ns, job_name), job, False)
        self._write(run, {"phase": bk.PENDING, "job": job_name, "image": self.job_image,
                          "store": target.repository,
                          "storeSecret": target.secret, "storeRegion": target.region,
                          "node": node or "", "message": "waiting for the Job's pod"})
        self._event(run, gs, "Normal", "BackupStarted",
                    f"backup {name} started ({run['spec'].get('reason', bk.MANUAL)}), "
                    f"to {target.repository}")

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

    # --- consistent saves -----------------------------------------------------------------------

    def _hooks_of(self, gs: dict) -> BackupHooks:
        game = self.cache.game((gs.get("spec") or {}).get("gameUid", ""))
        try:
            return parse_game(game).backup_hooks if game else BackupHooks()
        except (InvalidSpec, KeyError, ValueError, TypeError):
            return BackupHooks()  # the GameServer's own reconcile says what is wrong with it

    def _make_consistent(self, run: dict, gs: dict) -> str | None:
        """Runs the Game's before commands in the running server's container; returns why one
        failed, or None. The pod is recorded first, so its after commands are never forgotten,
        even by an operator restarted half-way. A server with no running container needs none:
        nothing writes its world."""
        hooks = self._hooks_of(gs)
        meta = run["metadata"]
        pod = bk.hook_pod(self.cache.pods_of(meta["namespace"], gs["metadata"]["name"]))
        if not hooks or pod is None:
            return None
        self._write(run, {"hooks": {"pod": pod, "after": bk.HOOKS_PENDING},
                          "message": "making the world consistent (the Game's backupHooks.before)"})
        for command in hooks.before:
            failure = self._run_hook(meta["namespace"], pod, "before", command,
                                     hooks.timeout_seconds)
            if failure:
                return failure
        return None

    def _resume(self, run: dict) -> tuple[dict, str | None] | None:
        """Runs the after commands when the before ones ran for this backup and these have not;
        returns the hooks' new status and why one failed. Each after command runs even when one
        before it failed (saving on matters more than anything after it)."""
        meta = run["metadata"]
        fresh = self.cache.backups.get((meta["namespace"], meta["name"])) or run
        hooks_status = (fresh.get("status") or {}).get("hooks") or {}
        if hooks_status.get("after") != bk.HOOKS_PENDING:
            return None
        gs = self.cache.gameservers.get((meta["namespace"], run["spec"]["gameServer"]))
        hooks = self._hooks_of(gs) if gs else BackupHooks()
        failures = [f for command in hooks.after if (f := self._run_hook(
            meta["namespace"], hooks_status["pod"], "after", command, hooks.timeout_seconds))]
        return ({"pod": hooks_status["pod"], "after": bk.HOOKS_FAILED if failures else bk.HOOKS_DONE},
                "; ".join(failures) or None)

    def _run_hook(self, ns: str, pod: str, stage: str, command: tuple[str, ...],
                  timeout: int) -> str | None:
        try:
            result = self.kube.exec(ns, pod, bk.SERVER_CONTAINER, list(command), timeout)
        except ApiException as e:
            return bk.hook_failure(stage, command, None, _api_reason(e), "")
        if result.ok:
            log.info("backup hook %s %s in %s/%s: ok", stage, command, ns, pod)
            return None
        return bk.hook_failure(stage, command, result.code, result.error, result.output)

    def _delete_archive(self, run: dict) -> None:
        """A deleted backup takes its archive (or its off-site snapshot) with it: a Job removes
        it, then the finalizer goes. A run that never made one just goes. While the store cannot
        be reached the Job fails and the backup stays, saying why: retention deletes nothing it
        could not delete."""
        meta = run["metadata"]
        if bk.FINALIZER_ARCHIVE not in (meta.get("finalizers") or []):
            return
        ns, name = meta["namespace"], meta["name"]
        status = run.get("status") or {}
        store, volume = None, None
        if status.get("snapshot") and status.get("store"):
            action, store, what = ["forget", status["snapshot"]], _store_target(status), \
                f"snapshot {status['snapshot']}"
        else:
            volume = status.get("volume")
            if (status.get("phase") != bk.SUCCEEDED or not volume
                    or self.kube.get("PersistentVolumeClaim", ns, volume) is None):
                return self._set_finalizer("GameServerBackup", run, bk.FINALIZER_ARCHIVE, False,
                                           self.cache.backups, (ns, name))
            action, what = ["delete", status["archive"]], "the archive"
        job_name = bk.fit(f"{name}-delete")
        job = self.cache.jobs.get((ns, job_name))
        if job is None:
            job = self.kube.create(bk.run_job(
                run, "GameServerBackup", action, None, volume, self.job_image, None, True, "delete",
                self._scheduling(self.cache.gameservers.get((ns, run["spec"]["gameServer"]))),
                store=store))
            self.cache.put(self.cache.jobs, (ns, job_name), job, False)
            return
        phase, msg = bk.job_outcome(job)
        if phase == bk.SUCCEEDED:
            self._set_finalizer("GameServerBackup", run, bk.FINALIZER_ARCHIVE, False,
                                self.cache.backups, (ns, name))
        elif phase == bk.FAILED:
            why = self._termination_message(ns, job_name).get("error") or msg
            text = f"deleting {what} failed: {why}"
            if status.get("message") != text:
                self._write(run, {"message": text})
                self.kube.event(run, "Warning", "ArchiveDeleteFailed", text)

    # --- restores --------------------------------------------------------------------------------

    def reconcile_restore(self, ns: str, name: str) -> None:
        run = self.cache.restores.get((ns, name))
        if run is None or run["metadata"].get("deletionTimestamp"):
            return
        status = run.get("status") or {}
        if status.get("phase") in bk.FINISHED:
            return
        gs_name, backup_name = run["spec"]["gameServer"], run["spec"]["backup"]
        gs = self.cache.gameservers.get((ns, gs_name))
        source = self.cache.backups.get((ns, backup_name))
        job_name = bk.fit(f"{name}-restore")
        job = self.cache.jobs.get((ns, job_name))
        if job is None:
            problem = None
            if gs is None:
                problem = f"GameServer {gs_name!r} does not exist"
            elif source is None:
                problem = f"GameServerBackup {backup_name!r} does not exist"
            elif source["spec"]["gameServer"] != gs_name:
                problem = f"backup {backup_name} is of {source['spec']['gameServer']}, not {gs_name}"
            elif (source.get("status") or {}).get("phase") != bk.SUCCEEDED:
                problem = f"backup {backup_name} has not succeeded"
            elif (source.get("status") or {}).get("store") and not source["status"].get("snapshot"):
                problem = f"backup {backup_name} names no snapshot in {source['status']['store']}"
            if problem:
                return self._finish(run, bk.FAILED, problem)
            if not status.get("phase"):
                was_running = (gs.get("status") or {}).get("phase") in (st.RUNNING, st.STARTING)
                self._write(run, {"phase": bk.PENDING, "startTime": clock.iso(clock.now()),
                                  "wasRunning": was_running, "message": "stopping the server"})
                self._event(run, gs, "Normal", "RestoreStarted",
                            f"restoring {backup_name}: stopping the server")
                self.queue.add(("GameServer", ns, gs_name))
                return
            busy = [b for b in self.cache.runs_of(self.cache.backups, ns, gs_name)
                    if (b.get("status") or {}).get("phase") in (bk.PENDING, bk.RUNNING)]
            if self.cache.pods_of(ns, gs_name) or busy:
                self._write(run, {"message": "waiting for the server to stop" if not busy else
                                  f"waiting for backup {busy[0]['metadata']['name']} to finish"})
                return
            src = source["status"]
            if src.get("snapshot") and src.get("store"):  # from the off-site store
                job = self.kube.create(bk.run_job(
                    run, "GameServerRestore",
                    ["restore", src["snapshot"], bk.DATA_MOUNT, bk.DATA_MOUNT], _data_claim(gs),
                    None, self.job_image, None, False, "restore", self._scheduling(gs),
                    store=_store_target(src)))
            else:
                action = ["restore", src["archive"], bk.DATA_MOUNT]
                if src.get("sha256"):
                    action += ["--sha256", src["sha256"]]
                job = self.kube.create(bk.run_job(run, "GameServerRestore", action, _data_claim(gs),
                                                  src.get("volume") or bk.backup_volume(gs_name),
                                                  self.job_image, None, False, "restore",
                                                  self._scheduling(gs)))
            self.cache.put(self.cache.jobs, (ns, job_name), job, False)
            self._write(run, {"phase": bk.RUNNING, "job": job_name, "message": "restoring"})
            return
        phase, msg = bk.job_outcome(job)
        if phase in bk.FINISHED:
            self._finish(run, phase, msg, job)

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


def _api_reason(e: ApiException) -> str:
    """What the API server (or the kubelet behind it) said when it refused an exec session."""
    try:
        return json.loads(e.body or "{}").get("message") or e.reason or str(e.status)
    except ValueError:
        return e.reason or str(e.status)


def _data_claim(gs: dict) -> str:
    st_ = (gs.get("spec") or {}).get("storage") or {}
    return st_.get("existingClaim") or f"{gs['metadata']['name']}-data"


def _store_target(status: dict) -> bk.StoreTarget:
    """The repository a backup's snapshot is in, as its status recorded it."""
    return bk.StoreTarget(status["store"], status["storeSecret"], status.get("storeRegion"))
