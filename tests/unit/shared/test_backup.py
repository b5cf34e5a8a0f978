"""Pure backup policy: retention, schedules, names, Job manifests."""
import datetime as dt

import pytest

from peon.shared import backup as bk

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def run(name, phase, hours_ago, keep=False):
    t = (NOW - dt.timedelta(hours=hours_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": {"name": name, "creationTimestamp": t},
            "spec": {"gameServer": "odin", "keep": keep},
            "status": {"phase": phase, "completionTime": t}}


def test_keep_last_counts_unpinned_successes_only():
    runs = [run("b1", "Succeeded", 50), run("b2", "Succeeded", 40, keep=True),
            run("b3", "Succeeded", 30), run("b4", "Succeeded", 20), run("b5", "Succeeded", 10),
            run("b6", "Running", 1)]
    assert bk.expired(runs, keep_last=2, max_age=None, now=NOW) == ["b1", "b3"]


def test_max_age_spares_pinned_and_the_newest_success():
    runs = [run("old-pinned", "Succeeded", 100, keep=True), run("old", "Succeeded", 90),
            run("old-failed", "Failed", 80), run("newest-ok", "Succeeded", 70),
            run("recent-failed", "Failed", 1)]
    # Everything successful is older than a day, but the newest success always stays.
    assert bk.expired(runs, None, dt.timedelta(days=1), NOW) == ["old", "old-failed"]


def test_failed_runs_follow_keep_last_among_themselves():
    runs = [run("f1", "Failed", 3), run("f2", "Failed", 2), run("f3", "Failed", 1),
            run("ok", "Succeeded", 5)]
    assert bk.expired(runs, keep_last=1, max_age=None, now=NOW) == ["f1", "f2"]


def test_retention_never_removes_the_last_success_even_when_all_expire():
    runs = [run("only", "Succeeded", 1000)]
    assert bk.expired(runs, keep_last=1, max_age=dt.timedelta(hours=1), now=NOW) == []


def test_durations():
    assert bk.parse_duration("30d") == dt.timedelta(days=30)
    assert bk.parse_duration("1d12h") == dt.timedelta(days=1, hours=12)
    assert bk.parse_duration("90m") == dt.timedelta(minutes=90)
    with pytest.raises(ValueError):
        bk.parse_duration("a week")


def test_schedule_slots_in_a_time_zone_across_dst():
    # 04:00 in Berlin: 03:00 UTC in winter (CET), 02:00 UTC in summer (CEST).
    prev, nxt = bk.schedule_slots("0 4 * * *", "Europe/Berlin", dt.datetime(2026, 3, 28, 12, tzinfo=UTC))
    assert prev.astimezone(UTC) == dt.datetime(2026, 3, 28, 3, tzinfo=UTC)
    assert nxt.astimezone(UTC) == dt.datetime(2026, 3, 29, 2, tzinfo=UTC)  # the night DST begins


def test_due_slot_runs_only_the_latest_missed_slot_and_only_once():
    since = dt.datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
    slot = bk.due_slot("0 * * * *", "UTC", NOW, since)
    assert slot == dt.datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert bk.due_slot("0 * * * *", "UTC", NOW, slot) is None
    assert bk.due_slot("0 * * * *", "UTC", NOW + dt.timedelta(minutes=59), slot) is None
    assert bk.due_slot("0 * * * *", "UTC", NOW + dt.timedelta(minutes=60), slot) is not None


def test_names_fit_kubernetes_limits_and_are_stable():
    long = "a" * 60
    n = bk.scheduled_name(long, NOW)
    assert len(n) <= 63 and n == bk.scheduled_name(long, NOW)
    assert bk.scheduled_name("odin", NOW) == "odin-20261128-1200"
    assert bk.before_update_name("odin", "img:1") != bk.before_update_name("odin", "img:2")


def test_backup_job_mounts_both_volumes_pins_the_node_and_never_retries():
    runobj = {"metadata": {"name": "b1", "namespace": "games", "uid": "u1",
                           "labels": {"team": "blue"}},
              "spec": {"gameServer": "odin"}}
    job = bk.run_job(runobj, "GameServerBackup", ["create", "/data", "/backups/b1.tar.gz"],
                     "odin-data", "odin-backups", "peon:1", "kwok-node-1", True, "backup")
    pod = job["spec"]["template"]["spec"]
    assert job["spec"]["backoffLimit"] == 0
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": "kwok-node-1"}
    assert [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]] == ["odin-data", "odin-backups"]
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/data"]["readOnly"] is True
    assert pod["containers"][0]["command"] == ["peon", "archive", "create", "/data", "/backups/b1.tar.gz"]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "blue" and labels["peon.dev/backup"] == "b1"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "GameServerBackup"
    delete = bk.run_job(runobj, "GameServerBackup", ["delete", "/backups/b1.tar.gz"], None,
                        "odin-backups", "peon:1", None, True, "delete")
    assert [v["name"] for v in delete["spec"]["template"]["spec"]["volumes"]] == ["backups"]


def test_jobs_go_where_the_server_may_run_and_tolerate_its_taints():
    runobj = {"metadata": {"name": "b1", "namespace": "games", "uid": "u1"},
              "spec": {"gameServer": "odin"}}
    sched = {"nodeSelector": {"disk": "big"}, "priorityClassName": "games",
             "tolerations": [{"key": "games", "operator": "Exists", "effect": "NoSchedule"}]}
    pinned = bk.run_job(runobj, "GameServerBackup", ["create", "/data", "/backups/b1.tar.gz"],
                        "odin-data", "odin-backups", "peon:1", "n1", True, "backup", sched)
    pod = pinned["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"disk": "big", "kubernetes.io/hostname": "n1"}
    assert pod["tolerations"] == sched["tolerations"] and pod["priorityClassName"] == "games"
    assert sched["nodeSelector"] == {"disk": "big"}  # the caller's dict is not changed
    stopped = bk.run_job(runobj, "GameServerRestore", ["restore", "/backups/b1.tar.gz", "/data"],
                         "odin-data", "odin-backups", "peon:1", None, False, "restore", sched)
    assert stopped["spec"]["template"]["spec"]["nodeSelector"] == {"disk": "big"}


def test_job_outcome():
    assert bk.job_outcome(None)[0] == "Pending"
    assert bk.job_outcome({"status": {"active": 1, "startTime": "t"}})[0] == "Running"
    assert bk.job_outcome({"status": {"conditions": [{"type": "Complete", "status": "True"}]}})[0] == "Succeeded"
    phase, msg = bk.job_outcome({"status": {"conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "gave up"}]}})
    assert phase == "Failed" and "BackoffLimitExceeded" in msg


def test_a_job_finishes_by_the_api_servers_clock_even_before_its_completion_time():
    from peon.shared.backup import job_finished_at
    met = {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": "2026-11-29T04:00:05Z"}
    assert job_finished_at({"status": {"conditions": [met]}}) == "2026-11-29T04:00:05Z"
    done = {"status": {"completionTime": "2026-11-29T04:00:06Z",
                       "conditions": [met, {**met, "type": "Complete"}]}}
    assert job_finished_at(done) == "2026-11-29T04:00:06Z"
    assert job_finished_at({"status": {"active": 1}}) is None


def test_an_off_site_store_is_parsed_and_names_one_repository_per_server():
    from peon.shared.backup import parse_policy
    p = parse_policy({"store": {"s3": {"endpoint": "http://10.89.0.1:8333/", "bucket": "peon"},
                                "secretRef": {"name": "store-keys"}}})
    assert p.store.repository("games", "vikings") == "s3:http://10.89.0.1:8333/peon/games/vikings"
    p = parse_policy({"store": {"s3": {"endpoint": "https://s3.example", "bucket": "b",
                                       "prefix": "/mine/", "region": "eu-1"},
                                "secretRef": {"name": "k"}}})
    assert p.store.repository("games", "vikings") == "s3:https://s3.example/b/mine"
    assert parse_policy({}).store is None


def test_a_store_job_takes_its_keys_from_the_secret_and_never_carries_them():
    import json as _json
    from peon.shared.backup import StoreTarget, run_job
    run = {"metadata": {"name": "b1", "namespace": "games", "uid": "u"},
           "spec": {"gameServer": "vikings"}}
    job = run_job(run, "GameServerBackup", ["backup", "/data", "--host", "games/vikings",
                                            "--name", "b1"], "vikings-data", None, "img", None,
                  True, "backup", store=StoreTarget("s3:http://s/b/games/vikings", "store-keys"))
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"][:3] == ["peon", "store", "backup"]
    assert c["envFrom"] == [{"secretRef": {"name": "store-keys"}}]
    assert {"name": "RESTIC_REPOSITORY", "value": "s3:http://s/b/games/vikings"} in c["env"]
    volumes = {v["name"] for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes == {"data", "tmp"}  # no backup volume: the world goes off-site
    assert "PASSWORD" not in _json.dumps(c["env"])


# --- what the Jobs' pods may do (issue 23, item 8) -------------------------------------------------

RUN = {"metadata": {"name": "b1", "namespace": "games", "uid": "u1"}, "spec": {"gameServer": "odin"}}
STORE = bk.StoreTarget("s3:http://s/b/games/odin", "store-keys")
READ = ["DAC_READ_SEARCH"]
WRITE = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"]


def _pod(job):
    return job["spec"]["template"]["spec"]


# Each step as the reconcilers render it, and the only capabilities it may add.
STEPS = {
    "archive create": (lambda: _pod(bk.run_job(
        RUN, "GameServerBackup", ["create", "/data", "/backups/b1.tar.gz"], "odin-data",
        "odin-backups", "img", "n1", True, "backup")), READ),
    "archive restore": (lambda: _pod(bk.run_job(
        RUN, "GameServerRestore", ["restore", "/backups/b1.tar.gz", "/data", "--sha256", "ab"],
        "odin-data", "odin-backups", "img", None, False, "restore")), WRITE),
    "archive delete": (lambda: _pod(bk.run_job(
        RUN, "GameServerBackup", ["delete", "/backups/b1.tar.gz"], None, "odin-backups", "img",
        None, True, "delete")), None),
    "store backup": (lambda: _pod(bk.run_job(
        RUN, "GameServerBackup", ["backup", "/data", "--host", "games/odin", "--name", "b1"],
        "odin-data", None, "img", "n1", True, "backup", store=STORE)), READ),
    "store restore": (lambda: _pod(bk.run_job(
        RUN, "GameServerRestore", ["restore", "5f3c", "/data", "/data"], "odin-data", None, "img",
        None, False, "restore", store=STORE)), WRITE),
    "store forget": (lambda: _pod(bk.run_job(
        RUN, "GameServerBackup", ["forget", "5f3c"], None, None, "img", None, True, "delete",
        store=STORE)), None),
    "download archive": (lambda: bk.download_pod(
        {**RUN, "status": {"volume": "odin-backups", "archive": "/backups/b1.tar.gz"}},
        "img", "p")["spec"], None),
    "download snapshot": (lambda: bk.download_pod(
        {**RUN, "status": {"snapshot": "5f3c", "store": STORE.repository,
                           "storeSecret": STORE.secret}}, "img", "p")["spec"], WRITE),
}


@pytest.mark.parametrize("step", sorted(STEPS))
def test_each_job_pod_has_no_token_and_only_the_capabilities_of_its_step(step):
    render, add = STEPS[step]
    pod = render()
    # None of them talks to the API server: no service-account token in the pod.
    assert pod["automountServiceAccountToken"] is False
    [container] = pod["containers"]
    caps = {"drop": ["ALL"], **({"add": add} if add else {})}
    assert container["securityContext"] == {
        "runAsUser": 0, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "capabilities": caps}
    # A read-only root: what restic writes goes to a /tmp of the pod's own.
    if "store" in container.get("command", []) or "envFrom" in container:
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_a_step_without_decided_capabilities_is_refused_not_given_some():
    with pytest.raises(ValueError, match="no capabilities are decided for `peon archive list`"):
        bk.run_job(RUN, "GameServerBackup", ["list"], None, "odin-backups", "img", None, True, "x")


def test_scheduling_fields_cannot_bring_the_token_back():
    job = bk.run_job(RUN, "GameServerBackup", ["create", "/data", "/backups/b1.tar.gz"],
                     "odin-data", "odin-backups", "img", None, True, "backup",
                     {"automountServiceAccountToken": True, "tolerations": []})
    assert _pod(job)["automountServiceAccountToken"] is False


def test_the_newest_offsite_backup_is_the_newest_snapshot_that_succeeded():
    local, failed = run("b1", "Succeeded", 1), run("b2", "Failed", 2)
    old, new = run("s1", "Succeeded", 30), run("s2", "Succeeded", 5)
    for r in (failed, old, new):
        r["status"]["snapshot"] = "ab12"
    assert bk.newest_offsite([local, failed, old, new])["metadata"]["name"] == "s2"
    assert bk.newest_offsite([local]) is None


def test_an_offsite_snapshot_is_overdue_once_a_promised_slot_is_over_an_hour_behind_it():
    daily = "0 4 * * *"
    made = NOW - dt.timedelta(days=10)
    at = lambda h, m=0: dt.datetime(2026, 11, 28, h, m, tzinfo=UTC)
    # 04:30: today's 04:00 snapshot may still be uploading; yesterday's is there.
    assert bk.offsite_overdue(daily, "UTC", at(4, 30), at(4) - dt.timedelta(days=1), made)[0] is None
    # 05:30: today's slot is over an hour behind and the newest is yesterday's: overdue.
    missing, again = bk.offsite_overdue(daily, "UTC", at(5, 30), at(4) - dt.timedelta(days=1), made)
    assert missing == at(4) and again == at(5) + dt.timedelta(days=1)
    assert bk.offsite_overdue(daily, "UTC", at(5, 30), at(4, 20), made)[0] is None
    assert bk.offsite_overdue(daily, "UTC", at(5, 30), None, made)[0] == at(4)  # none at all
    # A server made after the slot was never promised it.
    assert bk.offsite_overdue(daily, "UTC", at(5, 30), None, at(4, 10))[0] is None
