"""The loss window in status.backup: the newest off-site snapshot, and a Warning once when it
is older than the schedule promised (runs.ServerRuns.schedule_and_retain through the in-memory API)."""
import datetime as dt

from fake_kube import FakeKube
from fixtures import gameserver

from peon.shared import backup as bk, clock
from peon.operator.cache import Cache
from peon.shared.model import parse_backup_policy
from peon.operator.runs import ServerRuns
from peon.operator.workqueue import WorkQueue

STORE = {"s3": {"endpoint": "https://s3.example", "bucket": "worlds"}, "secretRef": {"name": "keys"}}


def snapshot(name, finished):
    return {"apiVersion": "peon.dev/v1alpha1", "kind": "GameServerBackup",
            "metadata": {"name": name, "namespace": "games", "resourceVersion": "1",
                         "creationTimestamp": finished},
            "spec": {"gameServer": "odin"},
            "status": {"phase": bk.SUCCEEDED, "completionTime": finished, "snapshot": "ab12cd"}}


def test_the_loss_window_is_in_status_and_an_overdue_snapshot_is_warned_once(monkeypatch):
    kube, cache = FakeKube(), Cache()
    runs = ServerRuns(kube, cache, WorkQueue(), "peon.invalid/job:1")
    gs = gameserver(backup={"schedule": "0 4 * * *", "store": STORE})
    gs["metadata"]["creationTimestamp"] = "2026-11-01T00:00:00Z"
    policy = parse_backup_policy(gs["spec"]["backup"])
    cache.put(cache.backups, ("games", "s1"), snapshot("s1", "2026-12-05T04:20:00Z"), False)
    # Scheduled backups are made by name when due; the one for today's slot is taken as made.
    gs["status"] = {"backup": {"lastScheduleTime": "2026-12-06T04:00:00Z"}}
    now = dt.datetime(2026, 12, 6, 5, 30, tzinfo=dt.timezone.utc)
    monkeypatch.setattr(clock, "now", lambda: now)
    requeue, status = runs.schedule_and_retain(gs, policy)
    assert status["lastOffsite"] == "s1" and status["lastOffsiteTime"] == "2026-12-05T04:20:00Z"
    assert status["offsiteOverdue"] is True
    warned = [e for e in kube.events if e[1] == "OffsiteBackupOverdue"]
    assert len(warned) == 1 and "promised one at 2026-12-06T04:00:00Z" in warned[0][2]
    gs["status"]["backup"] = status  # written; the next look says nothing new
    runs.schedule_and_retain(gs, policy)
    assert len([e for e in kube.events if e[1] == "OffsiteBackupOverdue"]) == 1
    # Today's snapshot lands: no longer overdue.
    cache.put(cache.backups, ("games", "s2"), snapshot("s2", "2026-12-06T05:40:00Z"), False)
    now = dt.datetime(2026, 12, 6, 6, 0, tzinfo=dt.timezone.utc)
    _, status = runs.schedule_and_retain(gs, policy)
    assert status["lastOffsite"] == "s2" and "offsiteOverdue" not in status
    assert requeue is not None
