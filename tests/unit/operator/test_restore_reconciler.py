"""The GameServerRestore reconciler through an in-memory API: what it refuses before anything
is stopped, and the order stop → wait → Job → done."""
import pytest

from fake_kube import FakeKube
from fixtures import game, gameserver

from peon.shared import backup as bk
from peon.operator.cache import Cache
from peon.operator.restore_reconciler import RestoreReconciler
from peon.operator.workqueue import WorkQueue


def put(kube, cache, store, kind, obj):
    meta = obj["metadata"]
    meta.setdefault("namespace", "games")
    meta.setdefault("resourceVersion", "1")
    meta.setdefault("uid", f"uid-{meta['name']}")
    kube.objects[(kind, "games", meta["name"])] = obj
    cache.put(store, ("games", meta["name"]), obj, False)


@pytest.fixture
def bed():
    kube, cache = FakeKube(), Cache()
    cache.put(cache.games, "valheim", game(), False)
    put(kube, cache, cache.gameservers, "GameServer", {**gameserver(), "status": {"phase": "Running"}})
    backup = bk.backup_object(cache.gameservers[("games", "odin")], "b1", bk.MANUAL)
    backup["status"] = {"phase": bk.SUCCEEDED, "volume": "odin-backups",
                        "archive": "/backups/b1.tar.gz", "sha256": "ab" * 32}
    put(kube, cache, cache.backups, "GameServerBackup", backup)
    return kube, cache, RestoreReconciler(kube, cache, WorkQueue(), "peon.invalid/job:1")


def restore(kube, cache, backup="b1", server="odin"):
    obj = {"apiVersion": "peon.dev/v1alpha1", "kind": "GameServerRestore",
           "metadata": {"name": "r1"}, "spec": {"gameServer": server, "backup": backup}}
    put(kube, cache, cache.restores, "GameServerRestore", obj)


def status(kube):
    return kube.objects[("GameServerRestore", "games", "r1")].get("status") or {}


@pytest.mark.parametrize("backup,server,why", [
    ("nope", "odin", "GameServerBackup 'nope' does not exist"),
    ("b1", "thor", "GameServer 'thor' does not exist"),
])
def test_a_restore_that_cannot_be_is_failed_before_anything_stops(bed, backup, server, why):
    kube, cache, restores = bed
    restore(kube, cache, backup, server)
    restores.reconcile("games", "r1")
    assert status(kube)["phase"] == bk.FAILED and why in status(kube)["message"]
    assert not [k for k, _, _ in kube.objects if k == "Job"]


def test_a_restore_stops_the_server_waits_for_its_pod_then_runs_the_verified_archive(bed):
    kube, cache, restores = bed
    restore(kube, cache)
    restores.reconcile("games", "r1")
    assert status(kube)["phase"] == bk.PENDING and status(kube)["wasRunning"] is True
    cache.put(cache.pods, ("games", "odin-1"), {"metadata": {"name": "odin-1", "namespace": "games",
                                                             "labels": {"peon.dev/gameserver": "odin"},
                                                             "resourceVersion": "1"},
                                                "status": {"phase": "Running"}}, False)
    cache.put(cache.restores, ("games", "r1"), kube.objects[("GameServerRestore", "games", "r1")], False)
    restores.reconcile("games", "r1")
    assert status(kube)["message"] == "waiting for the server to stop"
    assert not [k for k, _, _ in kube.objects if k == "Job"]
    cache.put(cache.pods, ("games", "odin-1"), {"metadata": {"name": "odin-1", "namespace": "games"}}, True)
    restores.reconcile("games", "r1")
    job = kube.objects[("Job", "games", "r1-restore")]
    args = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert args[-2:] == ["--sha256", "ab" * 32]  # verified against the backup's checksum
    assert status(kube)["phase"] == bk.RUNNING


def test_the_restore_job_gets_no_token_and_only_what_writing_the_world_back_needs(bed):
    kube, cache, restores = bed
    restore(kube, cache)
    restores.reconcile("games", "r1")
    cache.put(cache.restores, ("games", "r1"), kube.objects[("GameServerRestore", "games", "r1")], False)
    restores.reconcile("games", "r1")  # no server pod: the Job starts
    pod = kube.objects[("Job", "games", "r1-restore")]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    sc = pod["containers"][0]["securityContext"]
    # owners, modes and times given back, set-group folders kept, nothing else
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"]}
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True


def test_a_claim_not_labelled_for_the_server_is_never_restored_over(bed):
    kube, cache, restores = bed
    gs = {**gameserver(storage={"existingClaim": "someone-elses-world"}), "status": {"phase": "Running"}}
    gs["metadata"]["resourceVersion"] = "2"
    put(kube, cache, cache.gameservers, "GameServer", gs)
    restore(kube, cache)
    restores.reconcile("games", "r1")
    assert status(kube)["phase"] == bk.FAILED and "someone-elses-world" in status(kube)["message"]
    assert not [c for c in kube.calls if c[:2] == ("create", "Job")]


@pytest.mark.parametrize("size,told", [(1 << 30, ["--size", str(1 << 30)]), (None, []), (-1, [])])
def test_a_restore_from_the_store_tells_the_job_the_worlds_size(bed, size, told):
    """The backup's recorded size goes to `peon store restore --size` (its space check then
    runs no restic stats first); without a usable one the Job reads it from the store."""
    kube, cache, restores = bed
    backup = kube.objects[("GameServerBackup", "games", "b1")]
    backup["status"] = {"phase": bk.SUCCEEDED, "snapshot": "5f3c" * 16,
                        "store": "s3:http://store.example:9000/worlds/games/odin",
                        "storeSecret": "odin-store", **({"size": size} if size is not None else {})}
    cache.put(cache.backups, ("games", "b1"), backup, False)
    restore(kube, cache)
    restores.reconcile("games", "r1")
    cache.put(cache.restores, ("games", "r1"), kube.objects[("GameServerRestore", "games", "r1")], False)
    restores.reconcile("games", "r1")  # no server pod: the Job starts
    command = kube.objects[("Job", "games", "r1-restore")]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command == ["peon", "store", "restore", "5f3c" * 16, bk.DATA_MOUNT, bk.DATA_MOUNT, *told]
