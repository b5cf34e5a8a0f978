"""The GameServerBackup reconciler driven through an in-memory API (fake_kube.FakeKube): the Game's backupHooks
run in the server's container around the archive, and a failing one fails the backup with
its message while saving is still turned back on."""
import pytest

from fake_kube import FakeKube, api_error
from fixtures import game, gameserver

from peon.shared import backup as bk
from peon.operator.cache import Cache
from peon.shared.kube import ExecResult
from peon.operator.backup_reconciler import BackupReconciler
from peon.operator.workqueue import WorkQueue

BEFORE = [["rcon-cli", "save-off"], ["rcon-cli", "save-all", "flush"]]
AFTER = [["rcon-cli", "save-on"]]


def server_pod(name="odin-5d8f-x2", running=True):
    state = {"running": {"startedAt": "2026-11-29T08:00:00Z"}} if running else {"waiting": {}}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "games",
                         "labels": {"app.kubernetes.io/instance": "odin",
                                    "peon.dev/gameserver": "odin"}},
            "spec": {"nodeName": "node-1"},
            "status": {"phase": "Running" if running else "Pending",
                       "containerStatuses": [{"name": "server", "state": state}]}}


@pytest.fixture
def bed():
    kube, cache = FakeKube(), Cache()
    g = game()
    g["spec"]["backupHooks"] = {"before": [{"command": c} for c in BEFORE],
                                "after": [{"command": c} for c in AFTER], "timeoutSeconds": 30}
    cache.put(cache.games, "valheim", g, False)
    gs = gameserver()
    gs["metadata"]["resourceVersion"] = "1"
    cache.put(cache.gameservers, ("games", "odin"), gs, False)
    backups = BackupReconciler(kube, cache, WorkQueue(), "peon.invalid/job:1")
    return kube, cache, backups


def start_backup(kube, cache, name="b1"):
    run = bk.backup_object(cache.gameservers[("games", "odin")], name, bk.MANUAL)
    run["metadata"].update(namespace="games", resourceVersion="1", uid=f"uid-{name}",
                           finalizers=[bk.FINALIZER_ARCHIVE])
    kube.objects[("GameServerBackup", "games", name)] = run
    cache.put(cache.backups, ("games", name), run, False)
    return run


def finish_job(kube, cache, name="b1", ok=True):
    job = kube.objects[("Job", "games", bk.fit(f"{name}-backup"))]
    job["status"] = {"startTime": "2026-11-29T08:01:00Z", "completionTime": "2026-11-29T08:02:00Z",
                     "conditions": [{"type": "Complete" if ok else "Failed", "status": "True",
                                     "lastTransitionTime": "2026-11-29T08:02:00Z"}]}
    job["metadata"]["resourceVersion"] = "99"
    cache.put(cache.jobs, ("games", job["metadata"]["name"]), job, False)


def status(kube, name="b1"):
    return kube.objects[("GameServerBackup", "games", name)].get("status") or {}


def test_hooks_run_in_the_server_container_around_the_archive(bed):
    kube, cache, backups = bed
    cache.put(cache.pods, ("games", "odin-5d8f-x2"), server_pod(), False)
    start_backup(kube, cache)
    backups.reconcile("games", "b1")
    # Every before command ran, in order, in the server's pod, before the Job was made.
    assert kube.execs == [("odin-5d8f-x2", tuple(c)) for c in BEFORE]
    job_at = kube.calls.index(("create", "Job", "b1-backup"))
    assert max(i for i, c in enumerate(kube.calls) if c[0] == "exec") < job_at
    assert status(kube)["hooks"] == {"pod": "odin-5d8f-x2", "after": bk.HOOKS_PENDING}
    finish_job(kube, cache)
    backups.reconcile("games", "b1")
    assert kube.execs[len(BEFORE):] == [("odin-5d8f-x2", tuple(c)) for c in AFTER]
    assert status(kube)["phase"] == bk.SUCCEEDED
    assert status(kube)["hooks"]["after"] == bk.HOOKS_DONE
    backups.reconcile("games", "b1")  # finished: nothing runs twice
    assert len(kube.execs) == len(BEFORE) + len(AFTER)


def test_a_failing_hook_fails_the_backup_with_its_message_and_saving_is_turned_back_on(bed):
    kube, cache, backups = bed
    cache.put(cache.pods, ("games", "odin-5d8f-x2"), server_pod(), False)
    kube.exec_results[tuple(BEFORE[1])] = ExecResult(1, "Saving...\nError: RCON connection refused\n",
                                                     "exit code 1")
    start_backup(kube, cache)
    backups.reconcile("games", "b1")
    st = status(kube)
    assert st["phase"] == bk.FAILED
    assert "backupHooks.before command 'rcon-cli save-all flush' failed (exit code 1)" in st["message"]
    assert "RCON connection refused" in st["message"]
    assert ("Job", "games", "b1-backup") not in kube.objects  # no archive of an inconsistent world
    assert kube.execs[-1] == ("odin-5d8f-x2", tuple(AFTER[0]))  # save-on still ran
    assert st["hooks"]["after"] == bk.HOOKS_DONE
    assert any(r == "BackupFailed" and "RCON connection refused" in m for _, r, m in kube.events)


def test_a_refused_exec_session_fails_the_backup_saying_what_the_api_server_said(bed):
    kube, cache, backups = bed
    cache.put(cache.pods, ("games", "odin-5d8f-x2"), server_pod(), False)
    kube.exec_results[tuple(BEFORE[0])] = api_error(
        403, 'pods "odin-5d8f-x2" is forbidden: User "x" cannot get resource "pods/exec"')
    start_backup(kube, cache)
    backups.reconcile("games", "b1")
    assert status(kube)["phase"] == bk.FAILED
    assert 'cannot get resource "pods/exec"' in status(kube)["message"]


def test_a_failing_after_hook_keeps_a_good_archive_and_warns(bed):
    kube, cache, backups = bed
    cache.put(cache.pods, ("games", "odin-5d8f-x2"), server_pod(), False)
    kube.exec_results[tuple(AFTER[0])] = ExecResult(None, "", "still running after 30 s")
    start_backup(kube, cache)
    backups.reconcile("games", "b1")
    finish_job(kube, cache)
    backups.reconcile("games", "b1")
    st = status(kube)
    assert st["phase"] == bk.SUCCEEDED and st["hooks"]["after"] == bk.HOOKS_FAILED
    assert "backupHooks.after command 'rcon-cli save-on' failed (still running after 30 s)" in st["message"]
    assert any(r == "BackupHookFailed" for _, r, _m in kube.events)


@pytest.mark.parametrize("pods", [[], [server_pod(running=False)]], ids=["stopped", "starting"])
def test_a_server_with_no_running_game_is_archived_without_hooks(bed, pods):
    kube, cache, backups = bed
    for p in pods:
        cache.put(cache.pods, ("games", p["metadata"]["name"]), p, False)
    start_backup(kube, cache)
    backups.reconcile("games", "b1")
    assert kube.execs == []
    assert ("Job", "games", "b1-backup") in kube.objects
    assert "hooks" not in status(kube)


def test_after_hooks_pending_from_before_a_restart_still_run(bed):
    """The operator stopped between the before commands and the Job: a new one runs them again
    (idempotent) and, once the archive is made, the after ones."""
    kube, cache, backups = bed
    cache.put(cache.pods, ("games", "odin-5d8f-x2"), server_pod(), False)
    start_backup(kube, cache)
    backups.reconcile("games", "b1")
    kube.objects.pop(("Job", "games", "b1-backup"))
    cache.jobs.clear()
    fresh = BackupReconciler(kube, cache, WorkQueue(), "peon.invalid/job:1")
    fresh.reconcile("games", "b1")
    finish_job(kube, cache)
    fresh.reconcile("games", "b1")
    assert [c for _, c in kube.execs] == [tuple(c) for c in BEFORE + BEFORE + AFTER]
    assert status(kube)["hooks"]["after"] == bk.HOOKS_DONE


def test_the_backup_and_delete_jobs_get_no_token_and_only_their_capabilities(bed):
    """The Jobs as the reconciler makes them: archive create only reads the world, the archive's
    delete removes a file root owns; neither holds a service-account token."""
    kube, cache, backups = bed
    start_backup(kube, cache)
    backups.reconcile("games", "b1")
    pod = kube.objects[("Job", "games", "b1-backup")]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    sc = pod["containers"][0]["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["DAC_READ_SEARCH"]}
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    finish_job(kube, cache)
    backups.reconcile("games", "b1")
    assert status(kube)["phase"] == bk.SUCCEEDED
    run = kube.objects[("GameServerBackup", "games", "b1")]
    run["metadata"]["deletionTimestamp"] = "2026-11-29T09:00:00Z"
    cache.put(cache.backups, ("games", "b1"), run, False)
    kube.objects[("PersistentVolumeClaim", "games", "odin-backups")] = {
        "metadata": {"name": "odin-backups", "namespace": "games"}}
    backups.reconcile("games", "b1")
    delete = kube.objects[("Job", "games", "b1-delete")]["spec"]["template"]["spec"]
    assert delete["containers"][0]["command"][:3] == ["peon", "archive", "delete"]
    assert delete["automountServiceAccountToken"] is False
    assert delete["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_a_claim_not_labelled_for_the_server_is_never_backed_up(bed):
    kube, cache, backups = bed
    gs = gameserver(storage={"existingClaim": "someone-elses-world"})
    gs["metadata"]["resourceVersion"] = "2"
    cache.put(cache.gameservers, ("games", "odin"), gs, False)
    start_backup(kube, cache)
    backups.reconcile("games", "b1")
    status = kube.objects[("GameServerBackup", "games", "b1")]["status"]
    assert status["phase"] == bk.FAILED and "someone-elses-world" in status["message"]
    assert not [c for c in kube.calls if c[:2] == ("create", "Job")]


@pytest.mark.parametrize("offsite", [False, True], ids=["local", "offsite"])
def test_a_backup_in_a_namespace_being_deleted_is_released_and_its_snapshot_kept(bed, offsite):
    """The namespace takes no new Job (403 "being terminated"), so no delete Job can run: the
    finalizer goes (else the namespace stays Terminating for ever); the local archive goes with
    the namespace's volume, an off-site snapshot stays in the store to be listed back."""
    from fake_kube import api_error
    kube, cache, backups = bed
    run = start_backup(kube, cache)
    run["status"] = {"phase": bk.SUCCEEDED, "volume": "odin-backups", "archive": "b1.tar.gz"}
    if offsite:
        run["status"].update(snapshot="abc123", store="s3:https://s3.example/worlds",
                             storeSecret="keys")
    run["metadata"]["deletionTimestamp"] = "2026-11-29T09:00:00Z"
    cache.put(cache.backups, ("games", "b1"), run, False)
    kube.objects[("PersistentVolumeClaim", "games", "odin-backups")] = {
        "metadata": {"name": "odin-backups", "namespace": "games"}}
    kube.refuse["Job"] = api_error(403, 'jobs.batch "b1-delete" is forbidden: unable to create '
                                   "new content in namespace games because it is being terminated")
    backups.reconcile("games", "b1")
    left = kube.objects.get(("GameServerBackup", "games", "b1"))
    assert left is None or bk.FINALIZER_ARCHIVE not in left["metadata"].get("finalizers", [])
    assert not [c for c in kube.calls if c[:2] == ("create", "Job") and c[2] == "b1-delete"
                and ("Job", "games", "b1-delete") in kube.objects]
    # Any other refusal is not taken for the namespace's end: the finalizer stays.
    run2 = start_backup(kube, cache, "b2")
    run2["status"] = dict(run["status"])
    run2["metadata"]["deletionTimestamp"] = "2026-11-29T09:00:00Z"
    cache.put(cache.backups, ("games", "b2"), run2, False)
    kube.refuse["Job"] = api_error(403, "jobs.batch is forbidden: quota")
    with pytest.raises(Exception):
        backups.reconcile("games", "b2")
    assert bk.FINALIZER_ARCHIVE in kube.objects[("GameServerBackup", "games", "b2")][
        "metadata"]["finalizers"]
