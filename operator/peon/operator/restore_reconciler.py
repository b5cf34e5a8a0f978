"""The GameServerRestore reconciler: the server is stopped, a Job verifies the backup and
swaps the world in (from the backup volume or the store), and the server starts again."""
from __future__ import annotations

import logging

from peon.shared import backup as bk, clock, status as st
from .runs import RunBase, claim_refusal, data_claim, store_target

log = logging.getLogger(__name__)


class RestoreReconciler(RunBase):
    # --- restores --------------------------------------------------------------------------------

    def reconcile(self, ns: str, name: str) -> None:
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
            elif claim_refusal(self.cache, gs):
                problem = claim_refusal(self.cache, gs)
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
                action = ["restore", src["snapshot"], bk.DATA_MOUNT, bk.DATA_MOUNT]
                size = src.get("size")
                if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
                    # for the space check: the Job skips restic's stats (a second, issue 26)
                    action += ["--size", str(size)]
                job = self.kube.create(bk.run_job(
                    run, "GameServerRestore", action, data_claim(gs, self.cache),
                    None, self.job_image, None, False, "restore", self._scheduling(gs),
                    store=store_target(src)))
            else:
                action = ["restore", src["archive"], bk.DATA_MOUNT]
                if src.get("sha256"):
                    action += ["--sha256", src["sha256"]]
                job = self.kube.create(bk.run_job(run, "GameServerRestore", action, data_claim(gs, self.cache),
                                                  src.get("volume") or bk.backup_volume(gs_name),
                                                  self.job_image, None, False, "restore",
                                                  self._scheduling(gs)))
            self.cache.put(self.cache.jobs, (ns, job_name), job, False)
            self._write(run, {"phase": bk.RUNNING, "job": job_name, "message": "restoring"})
            return
        phase, msg = bk.job_outcome(job)
        if phase in bk.FINISHED:
            self._finish(run, phase, msg, job)
