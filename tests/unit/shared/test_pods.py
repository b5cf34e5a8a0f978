"""Which pods are a server's own (shared/pods.py)."""
from peon.shared import pods as pods_mod


def test_the_server_pod_is_its_own_not_a_jobs():
    def pod(name, labels, phase="Running", created="2026-11-29T10:00:00Z", owner=None, deleting=False):
        meta = {"name": name, "labels": {"peon.dev/gameserver": "vikings", **labels},
                "creationTimestamp": created}
        if owner:
            meta["ownerReferences"] = [{"kind": owner, "name": "x"}]
        if deleting:
            meta["deletionTimestamp"] = "2026-11-29T17:00:00Z"
        return {"metadata": meta, "status": {"phase": phase}}
    pods = [pod("backup", {"peon.dev/backup": "b1"}, created="2026-11-29T17:00:00Z"),
            pod("restore", {"peon.dev/restore": "r1"}, created="2026-11-29T17:00:00Z"),
            pod("download", {"peon.dev/backup": "b1", "peon.dev/download": "b1"}),
            pod("job", {}, owner="Job", created="2026-11-29T17:00:00Z"),
            pod("old", {}, created="2026-11-29T09:00:00Z"),
            pod("leaving", {}, created="2026-11-29T16:00:00Z", deleting=True),
            pod("new-pending", {}, phase="Pending", created="2026-11-29T16:30:00Z")]
    assert pods_mod.log_pod(pods, "vikings")["metadata"]["name"] == "old"
    assert pods_mod.log_pod(pods[:4], "vikings") is None
    assert pods_mod.log_pod(pods, "blocks") is None
    assert [pods_mod.server_of(p) for p in pods] == [None] * 4 + ["vikings"] * 3
