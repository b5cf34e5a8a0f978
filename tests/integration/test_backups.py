"""Backups, retention and restores against the real control plane. kwok plays the Jobs' pods
(they succeed, or fail when labelled testbed.peon.dev/outcome=fail); the archive tool itself is
tested on real files in tests/unit/jobs/test_archive.py."""
import datetime as dt
import time

import pytest

from gs_helpers import (apply_as_user, backup, condition, events_for, gameserver, restore,
                        run_phase, wait_event, wait_phase)
from kube_helpers import api_error, message, wait_for

pytestmark = pytest.mark.usefixtures("operator")
FAIL = {"testbed.peon.dev/outcome": "fail"}


def server_node(kube, ns, gs):
    pods = [p for p in kube.list("Pod", ns, f"peon.dev/gameserver={gs}")
            if "peon.dev/backup" not in p["metadata"]["labels"]]
    return pods[0]["spec"]["nodeName"]


def test_manual_backup_runs_a_job_beside_the_server(kube, namespace):
    kube.create(gameserver("odin", namespace))
    wait_phase(kube, namespace, "odin", "Running")
    kube.create(backup("odin-manual", namespace, "odin"))
    job = wait_for("the Job", lambda: kube.get("Job", namespace, "odin-manual-backup"))
    st = run_phase(kube, "GameServerBackup", namespace, "odin-manual", "Succeeded")
    assert st["volume"] == "odin-backups" and st["archive"] == "/backups/odin-manual.tar.gz"
    assert st["startTime"] and st["completionTime"]
    pod = job["spec"]["template"]["spec"]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
    assert claims == {"data": "odin-data", "backups": "odin-backups"}
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["data"]["readOnly"] is True and mounts["data"]["mountPath"] == "/data"
    assert pod["containers"][0]["command"][:3] == ["peon", "archive", "create"]
    assert pod["containers"][0]["image"] == "peon.invalid/peon-operator:test"
    # ReadWriteOnce: the Job runs on the node where the server runs.
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": server_node(kube, namespace, "odin")}
    assert st["node"] == server_node(kube, namespace, "odin")
    assert kube.get("PersistentVolumeClaim", namespace, "odin-backups")["status"]["phase"] == "Bound"
    gs = wait_for("status.backup", lambda: kube.status_of("GameServer", namespace, "odin").get("backup"))
    assert gs["lastSuccessful"] == "odin-manual"
    assert "peon.dev/archive" in kube.get("GameServerBackup", namespace, "odin-manual")["metadata"]["finalizers"]
    wait_event(kube, namespace, "odin", "BackupStarted")
    wait_event(kube, namespace, "odin", "BackupSucceeded")
    # Its outcome recorded, the Job goes, so no finished pod keeps the world's claim in use.
    wait_for("the Job to be removed", lambda: kube.get("Job", namespace, "odin-manual-backup") is None)


def test_backup_spec_is_immutable_but_keep_can_change(kube, namespace):
    kube.create(gameserver("odin", namespace))
    kube.create(backup("b", namespace, "odin"))
    url = f"/apis/peon.dev/v1alpha1/namespaces/{namespace}/gameserverbackups/b"
    e = api_error(lambda: kube.raw("PATCH", url, {"spec": {"gameServer": "loki"}},
                                   content_type="application/merge-patch+json"))
    assert "cannot change" in message(e)
    kube.raw("PATCH", url, {"spec": {"keep": True}}, content_type="application/merge-patch+json")


def test_failed_backup_is_visible_and_the_server_keeps_running(kube, namespace):
    kube.create(gameserver("odin", namespace))
    wait_phase(kube, namespace, "odin", "Running")
    kube.create(backup("doomed", namespace, "odin", labels=FAIL))
    st = run_phase(kube, "GameServerBackup", namespace, "doomed", "Failed")
    assert "the Job failed" in st["message"]
    assert kube.status_of("GameServer", namespace, "odin")["phase"] == "Running"
    assert wait_event(kube, namespace, "odin", "BackupFailed")["type"] == "Warning"


def test_backup_of_a_missing_server_fails_clearly(kube, namespace, crds):
    kube.create(backup("orphan", namespace, "nobody"))
    st = run_phase(kube, "GameServerBackup", namespace, "orphan", "Failed")
    assert "GameServer 'nobody' does not exist" in st["message"]


def test_deleting_a_backup_deletes_its_archive_first(kube, namespace):
    kube.create(gameserver("odin", namespace))
    wait_phase(kube, namespace, "odin", "Running")
    kube.create(backup("old", namespace, "odin"))
    run_phase(kube, "GameServerBackup", namespace, "old", "Succeeded")
    kube.delete("GameServerBackup", namespace, "old")
    job = wait_for("the delete Job", lambda: kube.get("Job", namespace, "old-delete"))
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["peon", "archive", "delete", "/backups/old.tar.gz"]
    assert [v["name"] for v in pod["volumes"]] == ["backups"]
    wait_for("the backup to be gone", lambda: kube.get("GameServerBackup", namespace, "old") is None)


def test_scheduled_backups_follow_the_clock_and_go_on_after_a_failure(kube, namespace, clock):
    # The schedule counts from the server's creation (a real API timestamp), so start the
    # clock from real time, whatever earlier tests did to it.
    clock.reset()
    now = clock.now()
    top = (now + dt.timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    clock.set(top - dt.timedelta(minutes=1))
    gs = gameserver("sched", namespace, backup={"schedule": "0 * * * *", "timeZone": "UTC"})
    gs["metadata"]["labels"] = FAIL  # the first scheduled run fails...
    apply_as_user(kube, gs)
    wait_phase(kube, namespace, "sched", "Running")
    st = wait_for("nextScheduleTime", lambda: kube.status_of("GameServer", namespace, "sched").get("backup"))
    assert st["nextScheduleTime"] == top.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [b for b in kube.list("GameServerBackup", namespace)] == []
    clock.set(top + dt.timedelta(seconds=5))
    first = f"sched-{top:%Y%m%d-%H%M}"
    run = wait_for("the scheduled run", lambda: kube.get("GameServerBackup", namespace, first))
    assert run["spec"]["reason"] == "Scheduled"
    run_phase(kube, "GameServerBackup", namespace, first, "Failed")
    gs["metadata"]["labels"] = {}  # ...the next one still happens, and succeeds
    apply_as_user(kube, gs)
    clock.set(top + dt.timedelta(hours=1, seconds=5))
    second = f"sched-{top + dt.timedelta(hours=1):%Y%m%d-%H%M}"
    wait_for("the next scheduled run", lambda: kube.get("GameServerBackup", namespace, second))
    run_phase(kube, "GameServerBackup", namespace, second, "Succeeded")
    assert len(kube.list("GameServerBackup", namespace)) == 2  # one run per slot, no catch-up storm


def test_retention_deletes_exactly_the_expected_runs(kube, namespace):
    gs = gameserver("kept", namespace, backup={"retention": {"keepLast": 2}})
    apply_as_user(kube, gs)
    wait_phase(kube, namespace, "kept", "Running")
    names = ["r1", "r2-pinned", "r3", "r4", "r5"]
    for n in names:
        kube.create(backup(n, namespace, "kept", keep=n.endswith("pinned")))
        run_phase(kube, "GameServerBackup", namespace, n, "Succeeded")
        time.sleep(1.1)  # real runs are minutes apart; the API's times step by whole seconds
    left = lambda: sorted(b["metadata"]["name"] for b in kube.list("GameServerBackup", namespace))
    # The names left are the failure's message (a string is never "done" to wait_for).
    wait_for("retention", lambda: left() == ["r2-pinned", "r4", "r5"] or str(left()))
    wait_event(kube, namespace, "kept", "BackupExpired")


def test_update_waits_for_a_backup_and_a_failed_one_holds_it(kube, namespace):
    gs = gameserver("upd", namespace)
    apply_as_user(kube, gs)
    wait_phase(kube, namespace, "upd", "Running")
    image = lambda: kube.get("Deployment", namespace, "upd")["spec"]["template"]["spec"]["containers"][0]["image"]
    old = image()
    apply_as_user(kube, gameserver("upd", namespace, image="ghcr.io/lloesche/valheim-server:v2"))
    pre = wait_for("the pre-update backup", lambda: [b for b in kube.list("GameServerBackup", namespace)
                                                    if b["spec"]["reason"] == "BeforeUpdate"])
    assert image() == old or kube.status_of("GameServerBackup", namespace,
                                            pre[0]["metadata"]["name"]).get("phase") == "Succeeded"
    run_phase(kube, "GameServerBackup", namespace, pre[0]["metadata"]["name"], "Succeeded")
    wait_for("the new image", lambda: image() == "ghcr.io/lloesche/valheim-server:v2")
    wait_for("Updated=True", lambda: condition(kube.get("GameServer", namespace, "upd"),
                                               "Updated")["status"] == "True")

    # A failing backup holds the next update; the server keeps running the old image.
    held = gameserver("upd", namespace, image="ghcr.io/lloesche/valheim-server:v3")
    held["metadata"]["labels"] = FAIL
    apply_as_user(kube, held)

    def held_update():
        g = kube.get("GameServer", namespace, "upd")
        c = next((c for c in g["status"]["conditions"] if c["type"] == "Updated"), {})
        return g if c.get("reason") == "BackupFailed" else None
    g = wait_for("the update to be held", held_update)
    assert "v3" in condition(g, "Updated")["message"] and "held" in condition(g, "Updated")["message"]
    assert image() == "ghcr.io/lloesche/valheim-server:v2"
    assert g["status"]["phase"] == "Running"


def test_eradication_takes_a_final_backup_first(kube, namespace):
    apply_as_user(kube, gameserver("bye", namespace, storage={"retainOnDelete": False}))
    wait_phase(kube, namespace, "bye", "Running")
    assert "peon.dev/final-backup" in kube.get("GameServer", namespace, "bye")["metadata"]["finalizers"]
    kube.delete("GameServer", namespace, "bye")
    final = wait_for("the final backup", lambda: [b for b in kube.list("GameServerBackup", namespace)
                                                 if b["spec"]["reason"] == "BeforeEradication"])
    run_phase(kube, "GameServerBackup", namespace, final[0]["metadata"]["name"], "Succeeded")
    wait_for("the world to be deleted",
             lambda: kube.get("PersistentVolumeClaim", namespace, "bye-data") is None, 90)
    assert kube.get("GameServer", namespace, "bye") is None
    assert kube.get("PersistentVolumeClaim", namespace, "bye-backups")  # backups outlive it
    assert kube.get("GameServerBackup", namespace, final[0]["metadata"]["name"])


def test_eradication_with_a_failing_final_backup_keeps_the_world(kube, namespace):
    gs = gameserver("stay", namespace, storage={"retainOnDelete": False})
    gs["metadata"]["labels"] = FAIL
    apply_as_user(kube, gs)
    wait_phase(kube, namespace, "stay", "Running")
    kube.delete("GameServer", namespace, "stay")
    final = wait_for("the final backup", lambda: kube.list("GameServerBackup", namespace))
    run_phase(kube, "GameServerBackup", namespace, final[0]["metadata"]["name"], "Failed")
    wait_for("a warning", lambda: [e for e in events_for(kube, namespace, "stay")
                                   if e["reason"] == "FinalBackupFailed"])
    assert kube.get("PersistentVolumeClaim", namespace, "stay-data")
    assert kube.get("GameServer", namespace, "stay")["metadata"]["deletionTimestamp"]


def test_restore_stops_restores_and_starts_the_server_again(kube, namespace):
    apply_as_user(kube, gameserver("phoenix", namespace))
    wait_phase(kube, namespace, "phoenix", "Running")
    kube.create(backup("snap", namespace, "phoenix"))
    run_phase(kube, "GameServerBackup", namespace, "snap", "Succeeded")
    kube.create(restore("undo", namespace, "phoenix", "snap"))
    stopped = wait_phase(kube, namespace, "phoenix", "Stopped")
    assert "restoring backup snap" in condition(stopped, "Ready")["message"]
    assert kube.get("Deployment", namespace, "phoenix")["spec"]["replicas"] == 0
    job = wait_for("the restore Job", lambda: kube.get("Job", namespace, "undo-restore"))
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"][:5] == ["peon", "archive", "restore", "/backups/snap.tar.gz", "/data"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["data"].get("readOnly", False) is False
    st = run_phase(kube, "GameServerRestore", namespace, "undo", "Succeeded")
    assert st["wasRunning"] is True
    wait_phase(kube, namespace, "phoenix", "Running")
    wait_event(kube, namespace, "phoenix", "RestoreStarted")
    wait_event(kube, namespace, "phoenix", "RestoreSucceeded")


def test_restore_of_a_failed_backup_is_refused_and_the_server_keeps_running(kube, namespace):
    apply_as_user(kube, gameserver("safe", namespace))
    wait_phase(kube, namespace, "safe", "Running")
    kube.create(backup("bad", namespace, "safe", labels=FAIL))
    run_phase(kube, "GameServerBackup", namespace, "bad", "Failed")
    kube.create(restore("nope", namespace, "safe", "bad"))
    st = run_phase(kube, "GameServerRestore", namespace, "nope", "Failed")
    assert "has not succeeded" in st["message"]
    assert kube.get("Deployment", namespace, "safe")["spec"]["replicas"] == 1


def test_a_failed_restore_starts_the_server_again(kube, namespace):
    apply_as_user(kube, gameserver("again", namespace))
    wait_phase(kube, namespace, "again", "Running")
    kube.create(backup("snap", namespace, "again"))
    run_phase(kube, "GameServerBackup", namespace, "snap", "Succeeded")
    kube.create(restore("broken", namespace, "again", "snap", labels=FAIL))
    run_phase(kube, "GameServerRestore", namespace, "broken", "Failed")
    wait_phase(kube, namespace, "again", "Running")
