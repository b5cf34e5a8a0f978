"""The GameServerBackup reconciler: a backup becomes a Job that archives the world (to the
backup volume, or as a snapshot in the off-site store), after the Game's backupHooks made the
world consistent; a deleted backup takes its archive or snapshot with it."""
from __future__ import annotations

import logging

from kubernetes.client.rest import ApiException

from peon.shared import backup as bk
from peon.shared.kube import refusal
from peon.shared.model import BackupHooks, InvalidSpec, parse_backup_policy, parse_game
from .runs import RunBase, api_reason, claim_refusal, data_claim, store_target
from . import store_listing

log = logging.getLogger(__name__)

# Seconds before a store backup asks again while its server's listing runs.
LISTING_WAIT = 5.0


def namespace_ending(e: ApiException) -> bool:
    """The API server's refusal of anything new in a namespace being deleted (403, "... because
    it is being terminated")."""
    return e.status == 403 and "being terminated" in str(e.body or "")


class BackupReconciler(RunBase):
    def __init__(self, kube, cache, queue, job_image: str,
                 turns: store_listing.StoreTurns | None = None):
        super().__init__(kube, cache, queue, job_image)
        self.turns = turns or store_listing.StoreTurns()  # shared with the store listing

    # --- backups ---------------------------------------------------------------------------------

    def reconcile(self, ns: str, name: str) -> float | None:
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
        if (run["metadata"].get("labels") or {}).get(bk.LABEL_FOUND_IN_STORE):
            return  # a snapshot listed back from the store: its status is written with it
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
            refused = claim_refusal(self.cache, gs)
            if refused:
                return self._finish(run, bk.FAILED, refused)
            if policy.store is not None:
                with self.turns.of(ns, gs_name):  # the listing may make the repository
                    if store_listing.listing_running(self.cache, ns, gs_name):
                        self._write(run, {"message": "waiting for the server's store listing "
                                          f"({store_listing.job_name(gs_name)}) to end"})
                        return LISTING_WAIT
                    failure = self._make_consistent(run, gs)
                    if failure:
                        return self._finish(run, bk.FAILED, failure)
                    return self._start_store_backup(run, gs, policy.store, job_name)
            failure = self._make_consistent(run, gs)
            if failure:
                return self._finish(run, bk.FAILED, failure)
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
                run, "GameServerBackup", ["create", bk.DATA_MOUNT, archive], data_claim(gs, self.cache),
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
        # The snapshot says what a cluster that has no object for it lists back (store_listing.py).
        spec = gs.get("spec") or {}
        dep = self.cache.children.get(("Deployment", ns, gs_name)) or {}
        image = ((((dep.get("spec") or {}).get("template") or {}).get("spec") or {})
                 .get("containers") or [{}])[0].get("image") or spec.get("image")
        about = ["--reason", run["spec"].get("reason") or bk.MANUAL]
        about += ["--game", spec["gameUid"]] if spec.get("gameUid") else []
        about += ["--image", image] if image else []
        job = self.kube.create(bk.run_job(
            run, "GameServerBackup", ["backup", bk.DATA_MOUNT, "--host", f"{ns}/{gs_name}",
                                      "--name", name, *about],
            data_claim(gs, self.cache), None, self.job_image, node, True, "backup", self._scheduling(gs),
            store=target))
        self.cache.put(self.cache.jobs, (ns, job_name), job, False)
        self._write(run, {"phase": bk.PENDING, "job": job_name, "image": self.job_image,
                          "store": target.repository,
                          "storeSecret": target.secret, "storeRegion": target.region,
                          "node": node or "", "message": "waiting for the Job's pod"})
        self._event(run, gs, "Normal", "BackupStarted",
                    f"backup {name} started ({run['spec'].get('reason', bk.MANUAL)}), "
                    f"to {target.repository}")

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
            return bk.hook_failure(stage, command, None, api_reason(e), "")
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
            action, store, what = ["forget", status["snapshot"]], store_target(status), \
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
            try:
                job = self.kube.create(bk.run_job(
                    run, "GameServerBackup", action, None, volume, self.job_image, None, True,
                    "delete", self._scheduling(self.cache.gameservers.get(
                        (ns, run["spec"]["gameServer"]))), store=store))
            except ApiException as e:
                if not namespace_ending(e):
                    raise
                # The whole namespace is being deleted and takes no new Job: its volumes (and
                # a local archive with them) go with it, and an off-site snapshot stays in the
                # store, where a new cluster lists it back. Holding the finalizer would hold
                # the namespace in Terminating for ever.
                log.info("%s/%s: its namespace is being deleted: %s, the object released", ns,
                         name, f"{what} stays in the store" if store else "the archive goes with "
                         "the namespace's volume")
                return self._set_finalizer("GameServerBackup", run, bk.FINALIZER_ARCHIVE, False,
                                           self.cache.backups, (ns, name))
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
